"""torchrun entry for a backbone: `quant_assets.ml.train_backbone`, rank 0 logging through Dagster Pipes.

    torchrun --nproc-per-node=N -m quant_assets.pipes_entries.backbone --config cfg.json

As the student's entry: only rank 0 opens Pipes (one session per launch, not one per rank). It logs
the evaluations and the run's summary; it reports no materialisation, because one `backbone_suite`
materialisation covers every backbone of the partition and the asset reads `backbone.json` (or a
rank's `error_rank<r>.json`) from the run's out_dir.
"""

from __future__ import annotations

import json
import sys

from quant_assets.ml.train_backbone import BackboneConfig, load_config, train
from quant_assets.pipes_entries.torchrun import Report, run

SUMMARY = ("backbone", "n_params", "world_size", "backend", "device", "train_windows", "val_windows",
           "windows_per_second", "seconds", "weights_sha256", "rank_weight_max_abs_diff")  # fmt: skip


def pipes_report(pipes, cfg: BackboneConfig) -> Report:
    def report(kind: str, data: dict) -> None:
        if kind == "eval":
            pipes.log.info(f"{cfg.backbone} eval {json.dumps(data)}")
        elif kind == "done":
            pipes.log.info(f"{cfg.backbone} done {json.dumps({k: data[k] for k in SUMMARY})}")

    return report


def main(argv: list[str] | None = None) -> int:
    return run("quant_assets.pipes_entries.backbone", "JSON file of BackboneConfig fields", load_config, train,
               pipes_report, argv)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
