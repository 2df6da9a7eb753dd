"""MLflow as a Dagster resource: where every training's params, metrics, plots and model files go.

Embedded default: a SQLite tracking store at `<project>/.mlflow/mlflow.db`, artifacts under
`<project>/.mlflow/artifacts` (`make mlflow` opens the UI on 127.0.0.1:5000). MLFLOW_TRACKING_URI (or
the resource's `tracking_uri`) switches to a server, which then keeps the artifacts where it is told.

Only the client API is used (no `mlflow.start_run` global state, no pyfunc): a model version is
registered from the run's artifact directory with `MlflowClient.create_model_version`, which works
offline and stores nothing executable. Model files are safe formats only: LightGBM text models,
torch state_dicts read with `weights_only=True`, JSON manifests, parquet.

Registered models are named `liquid_{COIN}_{horizon}_{kind}` (COIN without the quote currency:
`liquid_BTC_1h_teacher`); each version carries the model partition as the tag `partition`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from quant_assets import safe_inputs

PROJECT_ROOT = Path(__file__).resolve().parents[3]
QUOTE = "USDT"


def coin_name(symbol: str) -> str:
    """BTCUSDT -> BTC (the registry names coins, not pairs)."""
    return symbol[: -len(QUOTE)] if symbol.endswith(QUOTE) else symbol


def registered_name(kind: str, symbol: str, horizon: str) -> str:
    """The registry name; its parts are checked first, as they also go into the registry's search filters."""
    safe_inputs.model_kind(kind)
    safe_inputs.symbol_syntax(symbol)
    safe_inputs.horizon(horizon)
    return f"liquid_{coin_name(symbol)}_{horizon}_{kind}"


def git_commit() -> str:
    """HEAD of the project's checkout, `+dirty` when files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


@dataclass
class TrackedRun:
    """One MLflow run, open until `end`."""

    client: object  # mlflow.MlflowClient
    run_id: str
    experiment_id: str
    link: str  # the run's page in the MLflow UI

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # the store takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Finite numbers only (a NaN IC of a constant prediction is left out, not stored as NaN)."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float) and math.isfinite(v)]  # fmt: skip
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, str(k), str(v))

    def log_artifacts(self, local_dir: str | Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_png(self, figure, name: str) -> None:
        """A matplotlib figure as the artifact `plots/<name>.png`."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.png"
            figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
            self.client.log_artifact(self.run_id, str(path), "plots")

    def register(self, kind: str, symbol: str, horizon: str, artifact_path: str, partition: str,
                 tags: dict | None = None) -> str:  # fmt: skip
        """A new version of `liquid_{COIN}_{h}_{kind}` from this run's `artifact_path`; returns its number."""
        from mlflow.exceptions import MlflowException

        name = registered_name(kind, symbol, horizon)
        try:
            self.client.create_registered_model(
                name, tags={"kind": kind, "symbol": symbol, "horizon": horizon}
            )
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"
        mv = self.client.create_model_version(
            name, source=source, run_id=self.run_id, tags={"partition": partition, **(tags or {})}
        )
        return str(mv.version)

    def end(self, ok: bool = True) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def metadata(self) -> dict:
        """The materialisation's pointer to this run: a link for the UI and the id other assets look up."""
        return {"mlflow_run": dg.MetadataValue.url(self.link), "mlflow_run_id": self.run_id}


class MlflowTracking(dg.ConfigurableResource):
    """The MLflow client for model assets.

    `tracking_uri` unset: MLFLOW_TRACKING_URI, else the embedded SQLite store under the project
    (`artifact_root` then defaults to `.mlflow/artifacts` beside it). `ui_url` builds run links for
    the materialisation metadata (`make mlflow` serves the embedded store there).

    A server URI may carry a password (`postgresql://user:secret@host/db`): give it as
    `dg.EnvVar("MLFLOW_TRACKING_URI")` (default_resources does when the variable is set), so the
    value stays in the environment and the UI shows only the variable's name.
    """

    tracking_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "liquid"
    ui_url: str = "http://127.0.0.1:5000"

    def resolved_uri(self) -> str:
        uri = self.tracking_uri
        if isinstance(uri, dg.EnvVar):  # used outside a run (the CLI): Dagster resolves it only at run time
            uri = uri.get_value()
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri
        return f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"

    def _artifact_location(self, uri: str) -> str | None:
        if self.artifact_root:
            return (
                Path(self.artifact_root).resolve().as_uri()
                if "://" not in self.artifact_root
                else self.artifact_root
            )
        if uri.startswith("sqlite:///"):  # embedded: artifacts beside the database, not in the cwd
            return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
        return None  # a server decides

    def client(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        uri = self.resolved_uri()
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def start_run(self, run_name: str, *, params: dict | None = None, tags: dict | None = None) -> TrackedRun:
        """A new run in the experiment (created on first use), tagged with the git commit."""
        client = self.client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            from mlflow.exceptions import MlflowException

            try:
                exp_id = client.create_experiment(
                    self.experiment, artifact_location=self._artifact_location(self.resolved_uri())
                )
            except MlflowException:  # created meanwhile by a parallel run
                exp_id = client.get_experiment_by_name(self.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        all_tags = {"mlflow.source.git.commit": git_commit(), "mlflow.runName": run_name, **(tags or {})}
        run = client.create_run(exp_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=run_name)
        tracked = TrackedRun(client, run.info.run_id, exp_id,
                             f"{self.ui_url.rstrip('/')}/#/experiments/{exp_id}/runs/{run.info.run_id}")  # fmt: skip
        if params:
            tracked.log_params(params)
        return tracked
