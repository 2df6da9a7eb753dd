"""`make ui`: `dagster dev` (webserver + daemon) over the prepared $DAGSTER_HOME, stoppable by SIGTERM.

Two things a plain `dagster dev` in the repo root gets wrong for a first user:

- It warns about the repo-root `dagster.yaml` (the template `quant_assets.instance` copies into
  DAGSTER_HOME, not an instance config): `dagster dev` warns whenever the current directory holds a
  dagster.yaml and is not DAGSTER_HOME. So this prepares DAGSTER_HOME and runs from there, with the
  repo as the code location's working directory.
- Started in the background from a script (`make ui &`, CI, a supervisor), it ignores SIGTERM:
  dagster maps SIGTERM to SIGINT's handler, and a shell without job control starts background
  commands with SIGINT ignored. Restoring Python's SIGINT handler first makes both signals raise
  KeyboardInterrupt, on which `dagster dev` stops the webserver, the daemon and the code server.

    python -m quant_assets.ui [dagster dev] [-h 127.0.0.1] [-p 3000] [other `dagster dev` options]
"""

from __future__ import annotations

import os
import signal
import sys

from quant_assets.instance import REPO, prepare_home


def dev_args(argv: list[str]) -> list[str]:
    """`dagster dev` arguments: this project's module and the repo as working directory, bound to
    127.0.0.1 unless the caller names a host."""
    args = ["-m", "quant_assets.definitions", "-d", str(REPO)]
    if not {"-h", "--host"} & set(argv):
        args += ["-h", "127.0.0.1"]
    return args + argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["dagster", "dev"]:  # the Makefile spells out what runs
        argv = argv[2:]
    home = prepare_home()
    os.environ["DAGSTER_HOME"] = str(home)
    os.chdir(home)  # no repo-root dagster.yaml in the current directory: no warning about it
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see the module docstring

    from dagster._cli.dev import dev_command

    dev_command.main(args=dev_args(argv), prog_name="dagster dev")


if __name__ == "__main__":
    main()
