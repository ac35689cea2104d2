"""What a sweep measures: declarative experiment specs, the presets, and TOML plans.

One import for the three parts, each in its own module:

- :mod:`benchmarks.specs`: the types (kinds, :class:`PointSpec`, :class:`ExperimentSpec`,
  :class:`SweepPlan`, ...) and their JSON form in a results file;
- :mod:`benchmarks.presets`: the named plans and the experiments in each, built from the
  implementation registry (:mod:`servers.registry`);
- :mod:`benchmarks.plan_input`: a TOML plan and the command line's overrides, validated.

Adding an experiment kind: a name in :data:`ExperimentKind` (specs), its grid in the
presets, and the chart that draws it (docs/architecture.md, "How to add ...").
"""

from __future__ import annotations

from benchmarks.plan_input import apply_overrides, load_toml, validate_experiment
from benchmarks.presets import (
    CAPACITY_HOT_CONNECTIONS,
    LATENCY_ACTIVE_CONNECTIONS,
    grid_preset,
    open_loop_experiments,
    preset,
    scaling_experiments,
)
from benchmarks.specs import (
    EXPERIMENT_KINDS,
    IDLE_ACTIVE_CONNECTIONS,
    OPEN_LOOP_KINDS,
    PRESET_NAMES,
    RATIO_CONNECTIONS,
    RATIO_MSG_BYTES,
    SCALING_KINDS,
    ExperimentKind,
    ExperimentSpec,
    OpenLoopSpec,
    PlanOverrides,
    PointSpec,
    PresetName,
    ScalingSpec,
    SweepPlan,
    ceiling_reason,
    impl_names,
    plan_from_json,
    plan_to_json,
    scaling_from_json,
)

__all__ = [
    "CAPACITY_HOT_CONNECTIONS",
    "EXPERIMENT_KINDS",
    "IDLE_ACTIVE_CONNECTIONS",
    "LATENCY_ACTIVE_CONNECTIONS",
    "OPEN_LOOP_KINDS",
    "PRESET_NAMES",
    "RATIO_CONNECTIONS",
    "RATIO_MSG_BYTES",
    "SCALING_KINDS",
    "ExperimentKind",
    "ExperimentSpec",
    "OpenLoopSpec",
    "PlanOverrides",
    "PointSpec",
    "PresetName",
    "ScalingSpec",
    "SweepPlan",
    "apply_overrides",
    "ceiling_reason",
    "grid_preset",
    "impl_names",
    "load_toml",
    "open_loop_experiments",
    "plan_from_json",
    "plan_to_json",
    "preset",
    "scaling_experiments",
    "scaling_from_json",
    "validate_experiment",
]
