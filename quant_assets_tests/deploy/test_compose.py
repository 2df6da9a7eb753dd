"""docker/docker-compose.yaml against the compose-spec schema and the real Compose v2 parser."""

from __future__ import annotations

import json

import pytest
import yaml

from quant_assets_tests.deploy.conftest import DOCKER, run, venv_tool

COMPOSE = DOCKER / "docker-compose.yaml"
# a throw-away value, so the tests can see where it ends up
ENV = {"POSTGRES_USER": "quant", "POSTGRES_PASSWORD": "pw-from-the-environment"}


def _env_file(tmp_path, **override) -> str:
    """docker/.env.example with the values a user would set."""
    lines = []
    for line in (DOCKER / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if not line.startswith("#") and key in override:
            line = f"{key}={override[key]}"
        lines.append(line)
    path = tmp_path / "env"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _broken_copy(tmp_path) -> str:
    """The compose file with a misspelt key (`healthcheck.tests`), which Compose must refuse."""
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["postgres"]["healthcheck"]["tests"] = doc["services"]["postgres"]["healthcheck"].pop(
        "test"
    )
    path = tmp_path / "docker" / "docker-compose.yaml"
    path.parent.mkdir()
    (path.parent / "postgres-init").mkdir()
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_compose_file_matches_the_compose_spec_schema(tmp_path):
    ok = run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", _broken_copy(tmp_path)]
    )
    assert bad.returncode == 1 and "tests" in bad.stdout, bad.stdout + bad.stderr


def test_compose_v2_accepts_the_file_and_rejects_a_broken_copy(compose, tmp_path):
    version = compose(["version", "--short"], {})
    assert version.returncode == 0 and version.stdout.strip() == "2.40.3", version.stdout + version.stderr
    env_file = _env_file(tmp_path, POSTGRES_PASSWORD=ENV["POSTGRES_PASSWORD"])
    ok = compose(["-f", str(COMPOSE), "--env-file", env_file, "config", "--quiet"], {})
    assert ok.returncode == 0, ok.stderr
    bad = compose(["-f", _broken_copy(tmp_path), "--env-file", env_file, "config", "--quiet"], {})
    assert bad.returncode != 0 and "tests" in bad.stderr, bad.stderr


def test_compose_refuses_to_start_without_the_database_password(compose):
    """No default secret: an unset POSTGRES_PASSWORD stops `compose config` (and so `up`)."""
    r = compose(
        ["-f", str(COMPOSE), "--env-file", "/dev/null", "config", "--quiet"], {"POSTGRES_USER": "quant"}
    )
    assert r.returncode != 0
    assert "set POSTGRES_PASSWORD in docker/.env" in r.stderr


@pytest.fixture(scope="module")
def rendered(compose, tmp_path_factory) -> dict:
    r = compose(["-f", str(COMPOSE), "--env-file", "/dev/null", "config", "--format", "json"], ENV)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_services_ports_and_health(rendered):
    services = rendered["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon", "mlflow"}
    published = {
        name: [(p["host_ip"], p["published"], p["target"]) for p in svc.get("ports", [])]
        for name, svc in services.items()
    }
    # only the two UIs are published, and only on loopback
    assert published == {"postgres": [], "code": [], "webserver": [("127.0.0.1", "3000", 3000)],
                         "daemon": [], "mlflow": [("127.0.0.1", "5000", 5000)]}  # fmt: skip
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    for name in ("code", "webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code"]["condition"] == "service_healthy", name
    assert services["code"]["command"][:3] == ["dagster", "code-server", "start"]
    assert services["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["code"]["image"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    # the named volumes the run launcher (docker/dagster.yaml) refers to by name exist under that name
    assert rendered["volumes"]["lake"]["name"] == "quant_assets_lake"
    assert rendered["networks"]["quant_assets_network"]["name"] == "quant_assets_network"
    assert any(
        v["source"] == "postgres_data" and v["type"] == "volume" for v in services["postgres"]["volumes"]
    )


def test_secrets_come_from_the_environment_only(rendered):
    services = rendered["services"]
    for name in ("code", "webserver", "daemon"):
        assert services[name]["environment"]["DAGSTER_PG_PASSWORD"] == ENV["POSTGRES_PASSWORD"], name
    # MLflow builds its database URI inside the container: the rendered command holds no password
    assert ENV["POSTGRES_PASSWORD"] not in " ".join(services["mlflow"]["command"])
    assert services["mlflow"]["environment"]["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    for path in [*DOCKER.rglob("*"), *(DOCKER.parent / "deploy").rglob("*")]:
        if path.is_file() and path.name != ".gitignore":
            text = path.read_text()
            assert ENV["POSTGRES_PASSWORD"] not in text, path
            for line in text.splitlines():  # a password is only ever an env reference or CHANGE-ME
                if "PASSWORD" in line and "=" in line and not line.lstrip().startswith("#"):
                    value = line.split("=", 1)[1].strip()
                    assert value in ("CHANGE-ME", "") or "$" in value or "{" in value, f"{path}: {line}"


def test_dockerfile_installs_the_pinned_torch_and_copies_only_what_exists():
    """No image is built here (no engine): the Dockerfile's torch pin is pyproject's, every COPY
    source exists in the build context (the repo root) and is let through the .dockerignore."""
    import re
    import tomllib

    text = (DOCKER / "Dockerfile").read_text()
    deps = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M).group(1)
    assert f"torch=={torch}" in deps
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", text, re.M)  # CPU unless told otherwise
    allowed = (DOCKER / "Dockerfile.dockerignore").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources == [
        "pyproject.toml",
        "README.md",
        "quant_assets",
        "docker/dagster.yaml",
        "docker/workspace.yaml",
    ]
    for src in sources:
        assert (DOCKER.parent / src).exists(), src
        assert f"!{src}" in allowed, src
    assert '".[deploy]"' in text  # the extra with the run launchers, not dev
