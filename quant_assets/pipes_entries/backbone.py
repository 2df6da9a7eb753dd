"""torchrun entry for a backbone: `quant_assets.ml.train_backbone`, rank 0 logging through Dagster Pipes.

    torchrun --nproc-per-node=N -m quant_assets.pipes_entries.backbone --config cfg.json

As the student's entry: only rank 0 opens Pipes (one session per launch, not one per rank). It logs
the evaluations and the run's summary; it reports no materialisation, because one `backbone_suite`
materialisation covers every backbone of the partition and the asset reads `backbone.json` (or a
rank's `error_rank<r>.json`) from the run's out_dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from quant_assets.ml.train_backbone import load_config, train

SUMMARY = ("backbone", "n_params", "world_size", "backend", "device", "train_windows", "val_windows",
           "windows_per_second", "seconds", "weights_sha256", "rank_weight_max_abs_diff")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quant_assets.pipes_entries.backbone")
    ap.add_argument("--config", required=True, help="JSON file of BackboneConfig fields")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if int(os.environ.get("RANK", "0")) != 0:
        train(cfg)
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:

        def report(kind: str, data: dict) -> None:
            if kind == "eval":
                pipes.log.info(f"{cfg.backbone} eval {json.dumps(data)}")
            elif kind == "done":
                pipes.log.info(f"{cfg.backbone} done {json.dumps({k: data[k] for k in SUMMARY})}")

        train(cfg, report=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
