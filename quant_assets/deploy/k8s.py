"""Kubernetes: the run executor switch, and torchrun training steps (the student's) as GPU pods.

The student asset writes its inputs and `student.json` into a temporary directory, then launches
`torchrun -m quant_assets.pipes_entries.student --config student.json`. Locally that is a subprocess
(`ml.launch.torchrun_command` + `PipesSubprocessClient`). On Kubernetes (`TrainingLauncher`
with backend `k8s`, or QUANT_ASSETS_TRAINING_BACKEND=k8s) it is one pod, started and followed by
`dagster_k8s.PipesK8sClient`: `nvidia.com/gpu: G` requested and `torchrun --nproc-per-node=G`, one
process per GPU on NCCL. The temporary directory must be visible to both pods: run and step pods
mount the ReadWriteMany claim `training-scratch` at /scratch with TMPDIR=/scratch
(deploy/k8s/base/dagster.yaml), and the training pod mounts the same claim at the same path.

Several nodes: `student_pytorchjob` renders a Kubeflow PyTorchJob running the same entry point
(deploy/k8s/multinode/pytorchjob.yaml is its rendering for two nodes).

torchrun's rendezvous store listens on every interface of the pod; pods labelled
`quant-assets/role: training` accept connections only from each other (NetworkPolicy
training-isolation in deploy/k8s/base).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

STUDENT_ENTRY = "quant_assets.pipes_entries.student"
GPU_RESOURCE = "nvidia.com/gpu"
TRAINING_LABEL = {"quant-assets/role": "training"}
EXECUTORS = ("in_process", "k8s")
BACKENDS = ("local", "k8s")


def executor() -> dg.ExecutorDefinition:
    """The code location's executor: QUANT_ASSETS_EXECUTOR=k8s starts each step as a pod of its own
    (`dagster_k8s.k8s_job_executor`, under the K8sRunLauncher's settings); unset or `in_process`
    keeps the local default (on two cores a process per step costs seconds and gives nothing)."""
    kind = os.environ.get("QUANT_ASSETS_EXECUTOR", "in_process")
    if kind not in EXECUTORS:
        raise ValueError(f"QUANT_ASSETS_EXECUTOR={kind!r} is not one of {EXECUTORS}")
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.in_process_executor


@dataclass(frozen=True)
class TrainingPod:
    """What the training pod asks of the cluster (resolved settings of TrainingLauncher)."""

    image: str
    gpus: int = 1
    namespace: str = "quant-assets"
    cpu: str = "8"
    memory: str = "32Gi"
    shm_size: str = "8Gi"  # NCCL and torch's shared-memory tensors: a container's default 64 MiB is too small
    scratch_claim: str = "training-scratch"
    scratch_path: str = "/scratch"
    service_account: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"training pod: gpus must be >= 0, got {self.gpus}")
        if not self.image:
            raise ValueError("training pod: image is empty (set QUANT_ASSETS_TRAINING_IMAGE)")

    @property
    def nproc(self) -> int:
        """torchrun processes: one per GPU requested; one CPU process on a CPU-only pod."""
        return max(1, self.gpus)

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus else "gloo"


def torchrun_pod_command(module: str, args: Sequence[str], nproc: int) -> list[str]:
    """torchrun on one pod: `--standalone` rendezvous inside the pod, `nproc` local processes."""
    return ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", "-m", module, *args]


def training_env(pod: TrainingPod, *, single_node: bool = True) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(pod.threads), "TMPDIR": pod.scratch_path}
    if single_node:  # every rank is in this pod: collectives over loopback (NCCL uses NVLink/PCIe for data)
        env |= {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
    return env


def _container_resources(pod: TrainingPod) -> dict:
    requests = {"cpu": pod.cpu, "memory": pod.memory}
    limits = {"memory": pod.memory}
    if pod.gpus:  # extended resources: requests must equal limits
        requests[GPU_RESOURCE] = str(pod.gpus)
        limits[GPU_RESOURCE] = str(pod.gpus)
    return {"requests": requests, "limits": limits}


def training_pod_spec(pod: TrainingPod, *, container_name: str = "student") -> dict:
    """The pod spec (Kubernetes camelCase) around the training container: GPUs, scratch, /dev/shm."""
    spec: dict = {
        "restartPolicy": "Never",  # a failed training fails the step; Dagster decides about retries
        "containers": [
            {
                "name": container_name,
                "imagePullPolicy": "IfNotPresent",
                "resources": _container_resources(pod),
                "volumeMounts": [
                    {"name": "scratch", "mountPath": pod.scratch_path},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "scratch", "persistentVolumeClaim": {"claimName": pod.scratch_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pod.shm_size}},
        ],
    }
    if pod.gpus:  # GPU nodes are usually tainted so that only GPU work lands there
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    return spec


def _label(value: str) -> str:
    """A label value: [A-Za-z0-9._-], at most 63 characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:63]


def training_pod_meta(partition_key: str | None = None, step: str = "student") -> dict:
    labels = {
        **TRAINING_LABEL,
        "app.kubernetes.io/part-of": "quant-assets",
        "quant-assets/step": _label(step),
    }
    if partition_key:
        labels["quant-assets/partition"] = _label(partition_key)
    return {"labels": labels}


def student_args(config_path: str) -> list[str]:
    return ["--config", config_path]


def student_pod_body(pod: TrainingPod, config_path: str, pod_name: str, partition_key: str | None = None):
    """The V1Pod that PipesK8sClient.run creates for the student (without the Pipes context
    variables, which the client adds): what the tests check field by field."""
    from dagster_k8s.pipes import build_pod_body

    return build_pod_body(
        pod_name=pod_name,
        image=pod.image,
        command=torchrun_pod_command(STUDENT_ENTRY, student_args(config_path), pod.nproc),
        env_vars=training_env(pod),
        base_pod_meta=training_pod_meta(partition_key),
        base_pod_spec=training_pod_spec(pod),
    )


def student_pytorchjob(pod: TrainingPod, config_path: str, name: str, nodes: int) -> dict:
    """A Kubeflow PyTorchJob (kubeflow.org/v1) running the student's entry on `nodes` pods of
    `pod.gpus` GPUs each. The training operator sets PET_NNODES, PET_NPROC_PER_NODE,
    PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads as its defaults; the
    Master pod is node rank 0 and its rank 0 process is the one that reports through Pipes."""
    if nodes < 2:
        raise ValueError(
            f"PyTorchJob {name}: nodes must be >= 2 (one node: use the training pod), got {nodes}"
        )
    spec = training_pod_spec(pod, container_name="pytorch")  # the operator finds the container by this name
    container = spec["containers"][0]
    container["image"] = pod.image
    container["command"] = ["torchrun", "-m", STUDENT_ENTRY, *student_args(config_path)]
    # across nodes the collectives leave the pod: no loopback pinning
    container["env"] = [{"name": k, "value": v} for k, v in training_env(pod, single_node=False).items()]
    del spec["restartPolicy"]  # set per replica type below

    def replica(count: int) -> dict:
        template = {"metadata": training_pod_meta(), "spec": copy.deepcopy(spec)}
        return {"replicas": count, "restartPolicy": "Never", "template": template}

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": pod.namespace, "labels": dict(TRAINING_LABEL)},
        "spec": {
            "nprocPerNode": str(pod.nproc),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 0, "ttlSecondsAfterFinished": 86400},
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(nodes - 1)},
        },
    }


class TrainingLauncher(dg.ConfigurableResource):
    """Where a training step's torchrun runs: `local` (a subprocess of the step, the default) or
    `k8s` (a pod of its own through PipesK8sClient). Every field left unset falls back to its
    environment variable, as the Kubernetes manifests set them: QUANT_ASSETS_TRAINING_BACKEND,
    _IMAGE (else DAGSTER_CURRENT_IMAGE, the code location's image), _GPUS, _NAMESPACE, _CPU,
    _MEMORY, _SCRATCH_CLAIM, _NODE_SELECTOR (`key=value,key=value`)."""

    backend: str | None = None
    image: str | None = None
    gpus: int | None = None
    namespace: str | None = None
    cpu: str | None = None
    memory: str | None = None
    scratch_claim: str | None = None
    node_selector: dict[str, str] | None = None
    service_account: str | None = None
    pod_wait_timeout_seconds: float = 24 * 3600

    def resolved_backend(self) -> str:
        backend = self.backend or os.environ.get("QUANT_ASSETS_TRAINING_BACKEND", "local")
        if backend not in BACKENDS:
            raise ValueError(
                f"QUANT_ASSETS_TRAINING_BACKEND / launcher backend {backend!r} is not one of {BACKENDS}"
            )
        return backend

    def pod(self, threads: int = 1) -> TrainingPod:
        env = os.environ
        selector = self.node_selector
        if selector is None and env.get("QUANT_ASSETS_TRAINING_NODE_SELECTOR"):
            pairs = [p.split("=", 1) for p in env["QUANT_ASSETS_TRAINING_NODE_SELECTOR"].split(",")]
            bad = [p for p in pairs if len(p) != 2]
            if bad:
                raise ValueError(f"QUANT_ASSETS_TRAINING_NODE_SELECTOR: expected key=value pairs, got {bad}")
            selector = dict(pairs)
        defaults = TrainingPod(image="-")
        return TrainingPod(
            image=self.image or env.get("QUANT_ASSETS_TRAINING_IMAGE") or env.get("DAGSTER_CURRENT_IMAGE", ""),
            gpus=self.gpus if self.gpus is not None else int(env.get("QUANT_ASSETS_TRAINING_GPUS", "1")),
            namespace=self.namespace or env.get("QUANT_ASSETS_TRAINING_NAMESPACE", defaults.namespace),
            cpu=self.cpu or env.get("QUANT_ASSETS_TRAINING_CPU", defaults.cpu),
            memory=self.memory or env.get("QUANT_ASSETS_TRAINING_MEMORY", defaults.memory),
            scratch_claim=self.scratch_claim or env.get("QUANT_ASSETS_TRAINING_SCRATCH_CLAIM", defaults.scratch_claim),
            service_account=self.service_account,
            node_selector=selector or {},
            threads=threads,
        )  # fmt: skip

    def run_on_k8s(
        self,
        context: dg.AssetExecutionContext,
        module: str,
        config_path: str,
        threads: int = 1,
        partition_key: str | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Train in a pod and wait for it; rank 0's Pipes messages come back through the pod's log."""
        from dagster_k8s import PipesK8sClient

        pod = self.pod(threads)
        if not config_path.startswith(pod.scratch_path.rstrip("/") + "/"):
            raise ValueError(
                f"training config {config_path} is not under the shared scratch {pod.scratch_path}: "
                "set TMPDIR to it in the step's pod (deploy/k8s/base/dagster.yaml) so the training pod can read it"
            )
        return PipesK8sClient(load_incluster_config=True).run(
            context=context,
            image=pod.image,
            command=torchrun_pod_command(module, ["--config", config_path], pod.nproc),
            namespace=pod.namespace,
            env=training_env(pod),
            base_pod_meta=training_pod_meta(partition_key, step=module.rsplit(".", 1)[-1]),
            base_pod_spec=training_pod_spec(pod),
            pod_wait_timeout=self.pod_wait_timeout_seconds,
        )


def launch_torchrun(
    context: dg.AssetExecutionContext,
    pipes: dg.PipesSubprocessClient,
    module: str,
    config_path: str,
    *,
    cpu_procs: int = 1,
    threads: int = 1,
    partition_key: str | None = None,
    launcher: TrainingLauncher | None = None,
) -> tuple[dg.PipesClientCompletedInvocation, dict]:
    """`torchrun -m module --config config_path` where the deployment says, and what was launched.

    `local` (default): a subprocess of this step, one process per local GPU or `cpu_procs` on CPU,
    its rendezvous on loopback (quant_assets.ml.launch). `k8s` (QUANT_ASSETS_TRAINING_BACKEND=k8s,
    set by the gpu overlay, or `launcher.backend`): a pod of its own with the GPUs requested.
    Either way rank 0 reports through Dagster Pipes and the returned invocation carries it."""
    launcher = launcher or TrainingLauncher()
    if launcher.resolved_backend() == "k8s":
        pod = launcher.pod(threads)
        context.log.info(f"{module}: torchrun {pod.nproc} x {pod.backend} in a pod of {pod.image} "
                         f"({pod.gpus} {GPU_RESOURCE}) in namespace {pod.namespace}")  # fmt: skip
        invocation = launcher.run_on_k8s(context, module, config_path, threads, partition_key)
        launched = {"nproc": pod.nproc, "backend": pod.backend, "gpu_count": pod.gpus, "gpu_model": "see the pod's node",
                    "interconnect": "n/a", "where": "k8s", "image": pod.image, "namespace": pod.namespace}  # fmt: skip
        return invocation, launched
    from quant_assets.ml.launch import preflight, torchrun_command

    pre = preflight(cpu_procs=cpu_procs)
    launch = torchrun_command(module, ["--config", config_path], pre.nproc, threads=threads)
    if launch.note:
        context.log.warning(launch.note)
    context.log.info(f"{module}: torchrun {pre.nproc} x {pre.backend} in this step")
    invocation = pipes.run(command=launch.command, context=context, env=launch.env)
    return invocation, {**pre.metadata(), "netns": launch.netns, "where": "local"}
