"""deploy/k8s: kustomize renders the base and the gpu overlay; every object passes the Kubernetes
1.37 schemas with unknown fields rejected; the PyTorchJob's pod templates pass as PodTemplates."""

from __future__ import annotations

import copy

import pytest
import yaml

from quant_assets.deploy.k8s import TrainingPod, student_pytorchjob
from quant_assets_tests.deploy.conftest import K8S, load_all, run, venv_tool


def render(path) -> str:
    r = run([venv_tool("kubectl"), "kustomize", path])
    assert r.returncode == 0, r.stderr
    return r.stdout


def validate(tmp_path, docs: list[dict], name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return run([venv_tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.37.0", path])


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return load_all(render(K8S / "base"))


@pytest.fixture(scope="module")
def gpu() -> list[dict]:
    return load_all(render(K8S / "overlays" / "gpu"))


def by(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def test_base_and_gpu_overlay_pass_strict_schema_validation(base, gpu, tmp_path):
    kinds = sorted({(d["kind"], d["metadata"]["name"]) for d in base})
    assert ("StatefulSet", "postgres") in kinds and ("Deployment", "dagster-daemon") in kinds
    assert len(kinds) == 20
    for name, docs in (("base", base), ("gpu", gpu)):
        r = validate(tmp_path, docs, name)
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"


def test_a_broken_manifest_fails_validation(base, tmp_path):
    docs = copy.deepcopy(base)
    container = by(docs, "Deployment", "dagster-code")["spec"]["template"]["spec"]["containers"][0]
    container["envFromm"] = container.pop("envFrom")  # a typo an apply would silently drop
    r = validate(tmp_path, docs, "broken")
    assert r.returncode != 0 and "envFromm" in r.stdout + r.stderr


def _containers(docs, name):
    return by(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]


def test_images_and_current_image_agree(base, gpu):
    for docs, image in ((base, "quant_assets:cpu"), (gpu, "quant_assets:cu128")):
        for name in ("dagster-code", "dagster-webserver", "dagster-daemon", "mlflow"):
            assert _containers(docs, name)[0]["image"] == image, name
        env = {e["name"]: e["value"] for e in _containers(docs, "dagster-code")[0]["env"]}
        assert env["DAGSTER_CURRENT_IMAGE"] == image  # runs start in the code location's image


def test_instance_config_map_uses_the_k8s_run_launcher(base, gpu):
    instance = yaml.safe_load(by(base, "ConfigMap", "dagster-instance")["data"]["dagster.yaml"])
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    cfg = launcher["config"]
    assert cfg["instance_config_map"] == "dagster-instance"
    assert cfg["service_account_name"] == "dagster"
    names = {(d["kind"], d["metadata"]["name"]) for d in base}
    assert ("ServiceAccount", "dagster") in names and ("ConfigMap", cfg["env_config_maps"][0]) in names
    assert cfg["volumes"][0]["persistentVolumeClaim"]["claimName"] == "training-scratch"
    assert ("PersistentVolumeClaim", "training-scratch") in names
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    env = by(base, "ConfigMap", "quant-assets-env")["data"]
    assert env["QUANT_ASSETS_EXECUTOR"] == "k8s" and env["TMPDIR"] == cfg["volume_mounts"][0]["mountPath"]
    assert env["QUANT_ASSETS_TRAINING_BACKEND"] == "local"
    gpu_env = by(gpu, "ConfigMap", "quant-assets-env")["data"]
    assert gpu_env["QUANT_ASSETS_TRAINING_BACKEND"] == "k8s" and gpu_env["QUANT_ASSETS_TRAINING_GPUS"] == "1"
    assert gpu_env["QUANT_ASSETS_TRAINING_IMAGE"] == "quant_assets:cu128"
    # no Secret is rendered: secrets are created out of band, never committed
    assert not [d for d in base if d["kind"] == "Secret"]


def test_rbac_lets_the_launcher_manage_jobs_and_pods(base):
    rules = by(base, "Role", "dagster-launcher")["rules"]
    allowed = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for need in [("batch", "jobs", "create"), ("batch", "jobs", "delete"), ("", "pods", "create"),
                 ("", "pods", "watch"), ("", "pods/log", "get"), ("kubeflow.org", "pytorchjobs", "create")]:  # fmt: skip
        assert need in allowed, need
    binding = by(base, "RoleBinding", "dagster-launcher")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dagster", "namespace": "quant-assets"}]


def test_pytorchjob_manifest_is_the_module_rendering_and_its_pods_validate(tmp_path):
    on_disk = yaml.safe_load((K8S / "multinode" / "pytorchjob.yaml").read_text())
    expected = student_pytorchjob(
        TrainingPod(image="quant_assets:cu128", gpus=4),
        "/scratch/student/student.json",
        "liquid-student",
        nodes=2,
    )
    assert on_disk == expected
    specs = on_disk["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"], on_disk["spec"]["nprocPerNode"]) == (
        1,
        1,
        "4",
    )
    templates = []
    for role, rs in specs.items():
        c = rs["template"]["spec"]["containers"][0]
        assert c["name"] == "pytorch" and c["command"][:3] == [
            "torchrun",
            "-m",
            "quant_assets.pipes_entries.student",
        ]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
        templates.append({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                          "template": rs["template"]})  # fmt: skip
    r = validate(tmp_path, templates, "pytorchjob-pods")
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(ValueError, match="nodes must be >= 2"):
        student_pytorchjob(TrainingPod(image="x"), "/scratch/s.json", "one", nodes=1)
