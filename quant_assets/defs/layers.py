"""The one list of layers: definitions.py, the jobs, the CLI and the tests all derive from it.

A layer is a Dagster group: its assets, their checks, whether it is partitioned (monthly, or by its own
`partitions_def`: the models' training cut-offs) and its job (`<name>_job`). Order is run order (the CLI's
demo and backfill run the `in_runs` layers one run each, in this order). A new layer (evaluation,
operations) is one more line here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg

from quant_assets.coverage import READINESS_WINDOW_DAYS
from quant_assets.defs.audit.assets import AUDIT_GROUP, full_history_audit, required_data_readiness
from quant_assets.defs.audit.checks import readiness_ready
from quant_assets.defs.backbones.assets import BACKBONES_GROUP, backbone_assets
from quant_assets.defs.evaluation.assets import EVALUATION_GROUP, candidate_models
from quant_assets.defs.evaluation.checks import evaluation_checks
from quant_assets.defs.features.assets import FEATURE_GROUP, feature_assets
from quant_assets.defs.features.checks import feature_checks
from quant_assets.defs.maintenance.assets import MAINTENANCE_GROUP, lake_maintenance
from quant_assets.defs.models.assets import MODELS_GROUP, model_assets
from quant_assets.defs.operations.assets import OPERATIONS_GROUP, paper_trading
from quant_assets.defs.operations.checks import operations_checks
from quant_assets.defs.operations.monitoring import monitoring
from quant_assets.defs.raw.assets import RAW_GROUP, raw_tables
from quant_assets.defs.raw.checks import raw_checks
from quant_assets.defs.research.assets import RESEARCH_GROUP, research_assets
from quant_assets.partitions import daily, model_cutoffs
from quant_assets.periods import next_month


@dataclass(frozen=True)
class Layer:
    name: str
    group: str
    assets: tuple[dg.AssetsDefinition, ...]
    checks: tuple[dg.AssetChecksDefinition, ...]
    partitioned: bool  # monthly: runs take a partition range; otherwise one run over everything
    description: str
    in_runs: bool = True  # run by the CLI's demo and backfill (maintenance-style layers are not)
    # None: the monthly data partitions. Otherwise the layer's own (model cut-offs): a demo runs the
    # partition of its last month only, a backfill every one of them in the range (a walk-forward).
    partitions_def: dg.PartitionsDefinition | None = None
    job: dg.UnresolvedAssetJobDefinition = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # One job object per layer: schedules and Definitions must share it, not two of one name.
        # Its partitions are those of its assets (Dagster infers them).
        job = dg.define_asset_job(f"{self.name}_job", selection=self.selection, description=self.description)
        object.__setattr__(self, "job", job)

    @property
    def selection(self) -> dg.AssetSelection:
        return dg.AssetSelection.groups(self.group)

    def run_range(
        self, first_key: str, last_key: str, *, walk_forward: bool = True
    ) -> tuple[str, str] | None:
        """The partition range of this layer's run for the data months [first_key, last_key]: None when
        it is not partitioned or none of its partitions falls in the range."""
        if not self.partitioned:
            return None
        if self.partitions_def is None:
            return first_key, last_key
        # keys inside the months [first_key, last_key]: cut-offs one a month, days (operations) each day
        end = next_month(dt.date.fromisoformat(last_key)).isoformat()
        keys = [k for k in self.partitions_def.get_partition_keys() if first_key <= k < end]
        if not keys:
            return None
        # not walk_forward (a demo): the last month's partitions only (its cut-off, or its days)
        return (keys[0] if walk_forward else min(k for k in keys if k >= last_key[:7])), keys[-1]


RAW = Layer(
    name="raw",
    group=RAW_GROUP,
    assets=(raw_tables,),
    checks=tuple(raw_checks),
    partitioned=True,
    description="Raw layer (all raw tables and their checks) for a month or a range of months.",
)
FEATURES = Layer(
    name="features",
    group=FEATURE_GROUP,
    assets=tuple(feature_assets),
    checks=tuple(feature_checks),
    partitioned=True,
    description="The four feature tables for a month or a range of months.",
)
AUDIT = Layer(
    name="audit",
    group=AUDIT_GROUP,
    assets=(required_data_readiness, full_history_audit),
    checks=(readiness_ready,),
    partitioned=False,
    description=f"Coverage audits: readiness ({READINESS_WINDOW_DAYS} days) and full history.",
)

MODELS = Layer(
    name="models",
    group=MODELS_GROUP,
    assets=tuple(model_assets),
    checks=(),
    partitioned=True,
    partitions_def=model_cutoffs,
    description="The Liquid chain (teacher -> student) for one training cut-off or a walk-forward of them.",
)

EVALUATION = Layer(
    name="evaluation",
    group=EVALUATION_GROUP,
    assets=(candidate_models,),
    checks=tuple(evaluation_checks),
    partitioned=True,
    partitions_def=model_cutoffs,
    description="candidate_models: every model of a cut-off judged by the gates (blocking checks); MLflow alias "
    "`candidate` on the versions whose gates all passed.",
)

BACKBONES = Layer(
    name="backbones",
    group=BACKBONES_GROUP,
    assets=tuple(backbone_assets),
    checks=(),
    partitioned=True,
    partitions_def=model_cutoffs,
    description="The backbone suite (window ridge, iTransformer, PatchTST, TFT) for one training cut-off.",
    # not in the demo or backfill runs: three neural trainings and month predictions cost minutes per
    # cut-off on 2 cores (benchmarks/backbones.py); run `backbones_job` or materialise it from the UI
    in_runs=False,
)

RESEARCH = Layer(
    name="research",
    group=RESEARCH_GROUP,
    assets=tuple(research_assets),
    checks=(),  # multimodal_text_helps is declared on multimodal_eval (check_specs)
    partitioned=True,
    partitions_def=model_cutoffs,
    description="The research chains (vc_model, multimodal candidates and their OOS ablations) for one cut-off.",
)

# Paper trading and monitoring of the champions, one UTC day per partition. Not in demo/backfill runs
# yet (automation decides when they run); `run_range` gives a run's days (the last month's in a demo).
OPERATIONS = Layer(
    name="operations",
    group=OPERATIONS_GROUP,
    assets=(paper_trading, monitoring),
    checks=tuple(operations_checks),
    partitioned=True,
    partitions_def=daily,
    description="paper_trading (the champions' orders, fills, positions and PnL of the day, carried in the lake) "
    "and monitoring (performance, drift, calibration, PnL by score bucket; drift and calibration checks).",
    in_runs=False,
)

# Operations: not part of a demo or backfill run (its own weekly schedule); its check is declared
# on the asset (check_specs), so `checks` is empty.
MAINTENANCE = Layer(
    name="lake_maintenance",
    group=MAINTENANCE_GROUP,
    assets=(lake_maintenance,),
    checks=(),
    partitioned=False,
    description="Compact and vacuum every lake table (retention window in the asset's config).",
    in_runs=False,
)

LAYERS: tuple[Layer, ...] = (
    RAW, FEATURES, AUDIT, MODELS, EVALUATION, BACKBONES, RESEARCH, OPERATIONS, MAINTENANCE
)  # fmt: skip
LAYER_BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}
ASSETS = [a for layer in LAYERS for a in layer.assets]
CHECKS = [c for layer in LAYERS for c in layer.checks]
JOBS = [layer.job for layer in LAYERS]
