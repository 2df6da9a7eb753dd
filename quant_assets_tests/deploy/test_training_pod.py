"""The student's GPU training pod as dagster_k8s.pipes.build_pod_body renders it (what
PipesK8sClient.run creates), and the launcher resource's settings from the environment."""

from __future__ import annotations

import dagster as dg
import pytest
from kubernetes.client import ApiClient

from quant_assets.deploy.k8s import (
    STUDENT_ENTRY,
    TrainingLauncher,
    TrainingPod,
    executor,
    launch_torchrun,
    student_pod_body,
)

CONFIG = "/scratch/liquid_student_ab12/student.json"


def body(pod: TrainingPod, key: str | None = "2026-10-01") -> dict:
    return ApiClient().sanitize_for_serialization(student_pod_body(pod, CONFIG, "liquid-student-ab12", key))


def test_gpu_pod_field_by_field():
    b = body(TrainingPod(image="registry.example/quant_assets:cu128", gpus=4, cpu="16", memory="64Gi"))
    assert b["metadata"]["name"] == "liquid-student-ab12"
    labels = b["metadata"]["labels"]
    assert labels["quant-assets/role"] == "training"  # the NetworkPolicy's selector
    assert labels["quant-assets/partition"] == "2026-10-01" and labels["quant-assets/step"] == "student"
    assert labels["app.kubernetes.io/name"] == "dagster"  # build_pod_body's own labels are kept
    spec = b["spec"]
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert c["image"] == "registry.example/quant_assets:cu128"
    assert c["command"] == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4",
                            "-m", "quant_assets.pipes_entries.student", "--config", CONFIG]  # fmt: skip
    assert c["resources"] == {
        "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    assert {e["name"]: e["value"] for e in c["env"]} == {
        "OMP_NUM_THREADS": "1", "TMPDIR": "/scratch", "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo",
    }  # fmt: skip
    assert c["volumeMounts"] == [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert spec["volumes"][0] == {
        "name": "scratch",
        "persistentVolumeClaim": {"claimName": "training-scratch"},
    }
    assert spec["volumes"][1]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # the config lives on the claim the pod mounts
    assert CONFIG.startswith(c["volumeMounts"][0]["mountPath"] + "/")


def test_nproc_follows_the_gpus_requested():
    for gpus in (1, 2, 8):
        c = body(TrainingPod(image="i", gpus=gpus))["spec"]["containers"][0]
        assert f"--nproc-per-node={gpus}" in c["command"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    cpu = body(TrainingPod(image="i", gpus=0), key=None)
    c = cpu["spec"]["containers"][0]
    assert "--nproc-per-node=1" in c["command"] and "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "tolerations" not in cpu["spec"] and "quant-assets/partition" not in cpu["metadata"]["labels"]


def test_launcher_settings_from_the_environment(monkeypatch):
    for k, v in {"QUANT_ASSETS_TRAINING_BACKEND": "k8s", "QUANT_ASSETS_TRAINING_GPUS": "2",
                 "DAGSTER_CURRENT_IMAGE": "quant_assets:cu128", "QUANT_ASSETS_TRAINING_MEMORY": "48Gi",
                 "QUANT_ASSETS_TRAINING_NODE_SELECTOR": "gpu=a100,pool=train"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    launcher = TrainingLauncher()
    assert launcher.resolved_backend() == "k8s"
    pod = launcher.pod(threads=4)
    assert (pod.image, pod.gpus, pod.nproc, pod.backend, pod.memory, pod.threads) == (
        "quant_assets:cu128", 2, 2, "nccl", "48Gi", 4)  # fmt: skip
    assert dict(pod.node_selector) == {"gpu": "a100", "pool": "train"}
    # explicit resource config wins over the environment
    assert TrainingLauncher(gpus=8, image="other:1").pod().gpus == 8
    monkeypatch.setenv("QUANT_ASSETS_TRAINING_BACKEND", "slurm")
    with pytest.raises(ValueError, match="slurm"):
        TrainingLauncher().resolved_backend()
    monkeypatch.delenv("QUANT_ASSETS_TRAINING_BACKEND")
    assert TrainingLauncher().resolved_backend() == "local"
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE")
    with pytest.raises(ValueError, match="QUANT_ASSETS_TRAINING_IMAGE"):
        TrainingLauncher().pod()


def test_executor_switch(monkeypatch):
    from dagster_k8s import k8s_job_executor

    monkeypatch.delenv("QUANT_ASSETS_EXECUTOR", raising=False)
    assert executor() is dg.in_process_executor
    monkeypatch.setenv("QUANT_ASSETS_EXECUTOR", "k8s")
    assert executor() is k8s_job_executor
    monkeypatch.setenv("QUANT_ASSETS_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="celery"):
        executor()


def test_k8s_backend_refuses_a_config_the_training_pod_cannot_read(monkeypatch, tmp_path):
    """Under the k8s backend the config must be on the shared scratch claim: a step whose TMPDIR
    is elsewhere fails before any pod is created, naming both paths."""
    monkeypatch.setenv("QUANT_ASSETS_TRAINING_BACKEND", "k8s")
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "quant_assets:cu128")
    config = tmp_path / "student.json"

    @dg.asset(required_resource_keys={"pipes"})
    def trains(context) -> None:
        launch_torchrun(
            context, context.resources.pipes, STUDENT_ENTRY, str(config), partition_key="2026-10-01"
        )

    with pytest.raises(Exception, match=f"{config} is not under the shared scratch /scratch"):
        dg.materialize([trains], resources={"pipes": dg.PipesSubprocessClient()})
