"""The torchrun entry both trainings share: parse `--config`, train, and let rank 0 alone open Dagster Pipes.

Only rank 0 opens Pipes: if every rank did, Dagster would receive one session (and materialisation) per
rank and fail the step (../shared/DAGSTER-PATTERNS.md section 5). The other ranks train silently; train()
calls `report` on rank 0 only. The launching asset passes everything through the config file, so no
Pipes extras need broadcasting to the other ranks.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

Report = Callable[[str, dict], None]


def run(prog: str, config_help: str, load_config: Callable[[str], Any], train: Callable[..., dict],
        make_report: Callable[[Any, Any], Report], argv: list[str] | None = None) -> int:  # fmt: skip
    """Train the config named by --config; on rank 0 with `report = make_report(pipes, cfg)`."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--config", required=True, help=config_help)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if int(os.environ.get("RANK", "0")) != 0:
        train(cfg)
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        train(cfg, report=make_report(pipes, cfg))
    return 0
