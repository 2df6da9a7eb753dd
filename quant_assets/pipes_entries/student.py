"""torchrun entry for the student: `quant_assets.ml.train_student`, rank 0 reporting through Dagster Pipes.

    torchrun --nproc-per-node=N -m quant_assets.pipes_entries.student --config cfg.json

Only rank 0 opens Pipes (pipes_entries.torchrun): it reports the run's one materialisation.
"""

from __future__ import annotations

import json
import os
import sys

from quant_assets.ml.train_student import StudentConfig, load_config, train
from quant_assets.pipes_entries.torchrun import Report, run

# What the materialisation carries from the manifest (the rest is in student.json and MLflow).
REPORTED = ("n_params", "world_size", "backend", "device", "train_windows", "val_windows", "train_rows",
            "windows_per_second", "seconds", "weights_sha256", "rank_weight_max_abs_diff")  # fmt: skip


def pipes_report(pipes, cfg: StudentConfig) -> Report:
    def report(kind: str, data: dict) -> None:
        if kind == "eval":
            pipes.log.info(f"student eval {json.dumps(data)}")
        elif kind == "done":
            last = data["eval"][-1] if data["eval"] else {}
            metadata = {k: data[k] for k in REPORTED}
            # a NaN (IC of a constant prediction) is left out: JSON and the UI have no NaN
            metadata |= {f"val_{k}": v for k, v in last.items() if k != "step" and v == v}
            metadata["final_loss"] = data["loss"][-1][1] if data["loss"] else None
            metadata["rank"] = int(os.environ.get("RANK", "0"))
            if data.get("init_from"):  # a fine-tuning run: what it started from
                metadata["init_from"] = data["init_from"]
                metadata["init_weights_sha256"] = data["init_weights_sha256"]
            pipes.report_asset_materialization(metadata=metadata)

    return report


def main(argv: list[str] | None = None) -> int:
    return run("quant_assets.pipes_entries.student", "JSON file of StudentConfig fields", load_config, train,
               pipes_report, argv)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
