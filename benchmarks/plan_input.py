"""What the user hands a sweep: a TOML plan, and command-line flags laid over a plan.

Both are checked here (:func:`validate_experiment`), each failure a one-line
:class:`~muxlab.errors.UsageError`.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from benchmarks.names import check_safe_name
from benchmarks.presets import preset
from benchmarks.specs import (
    EXPERIMENT_KINDS,
    OPEN_LOOP_KINDS,
    SCALING_KINDS,
    ExperimentSpec,
    OpenLoopSpec,
    PlanOverrides,
    SweepPlan,
    impl_names,
)
from muxlab.errors import UsageError
from muxlab.fdbudget import sweep_connection_budget
from servers import registry
from servers.loop import ET_DRAINS
from servers.protocols import PROTOCOL_NAMES

_TOP_KEYS = {"preset", "repeats", "retries", "duration_s", "warmup_s", "experiments"}
_EXPERIMENT_KEYS = {f.name for f in fields(ExperimentSpec)}


def load_toml(path: Path) -> SweepPlan:
    """A plan from a TOML file: an optional ``preset`` base, timing, ``[[experiments]]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    base = preset(str(data.get("preset", "quick")))
    experiments = base.experiments
    if "experiments" in data:
        if not isinstance(data["experiments"], list) or not data["experiments"]:
            raise UsageError(f"{path}: 'experiments' must be a non-empty array of tables")
        experiments = tuple(_experiment_from_toml(path, e) for e in data["experiments"])
    plan = replace(
        base,
        experiments=experiments,
        source=str(path),
        preset=base.preset if "preset" in data else None,
    )
    return replace(
        plan,
        repeats=_number(path, data, "repeats", plan.repeats, int),
        retries=_number(path, data, "retries", plan.retries, int),
        duration_s=_number(path, data, "duration_s", plan.duration_s, float),
        warmup_s=_number(path, data, "warmup_s", plan.warmup_s, float),
    )


def _number(path: Path, data: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{path}: {key} must be a number")
    if kind is int and not isinstance(value, int):
        raise UsageError(f"{path}: {key} must be an integer")
    return kind(value)


def _experiment_from_toml(path: Path, table: Any) -> ExperimentSpec:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: each [[experiments]] entry must be a table")
    unknown = set(table) - _EXPERIMENT_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown experiment key(s) {', '.join(sorted(unknown))}")
    if "name" not in table:
        raise UsageError(f"{path}: every experiment needs a name")
    name = check_safe_name("experiment name", str(table["name"]))
    kind = table.get("kind", name)
    if kind not in EXPERIMENT_KINDS:
        kinds = ", ".join(EXPERIMENT_KINDS)
        raise UsageError(f"{path}: experiment {name!r}: kind {kind!r} is not one of {kinds}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    for key in ("impls", "protocols"):
        if key in table:
            values[key] = _strings(path, name, key, table[key])
    for key in ("connections", "idle", "msg_bytes"):
        if key in table:
            values[key] = _ints(path, name, key, table[key])
    for key in ("pipeline", "repeats"):
        if key in table:
            values[key] = _ints(path, name, key, [table[key]])[0]
    if "et_drains" in table:
        values["et_drains"] = _strings(path, name, "et_drains", table["et_drains"])
    if "open_loop" in table:
        values["open_loop"] = _open_loop_from_toml(path, name, table["open_loop"])
    if "impls" not in values:
        raise UsageError(f"{path}: experiment {name!r} needs impls")
    spec = ExperimentSpec(**values)
    validate_experiment(spec)
    return spec


def _open_loop_from_toml(path: Path, name: str, table: Any) -> OpenLoopSpec:
    where = f"{path}: experiment {name!r}: open_loop"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    known = {f.name: f for f in fields(OpenLoopSpec)}
    unknown = set(table) - set(known)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UsageError(f"{where}: {key} must be a number >= 0")
        values[key] = int(value) if key in ("max_steps", "repeats", "overload_steps") else value
    spec = OpenLoopSpec(**values)
    positive = (spec.slo_ms, spec.start_rps, spec.precision, spec.max_steps, spec.window_s)
    if spec.factor <= 1 or min(positive) <= 0 or spec.repeats < 1 or spec.rate_rps == 0:
        raise UsageError(
            f"{where}: need factor > 1, repeats >= 1, and slo_ms, start_rps, precision, "
            "max_steps, window_s and rate_rps > 0"
        )
    return spec


def _strings(path: Path, name: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: experiment {name!r}: {key} must be a list of strings")
    return tuple(value)


def _ints(path: Path, name: str, key: str, value: Any) -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(type(v) is int for v in value)
    if not ok:
        raise UsageError(f"{path}: experiment {name!r}: {key} must be a list of integers")
    return tuple(value)


# -- checks and overrides --------------------------------------------------------------


def validate_experiment(spec: ExperimentSpec) -> None:
    for impl in spec.impls:
        registry.get(impl)  # UsageError naming the choices when it is not registered
    for protocol in spec.protocols:
        if protocol not in PROTOCOL_NAMES:
            raise UsageError(f"unknown protocol {protocol!r} (choose from echo, http)")
    if any(n < 1 for n in spec.connections):
        raise UsageError(f"experiment {spec.name!r}: active connections must be >= 1")
    if any(n < 0 for n in spec.idle):
        raise UsageError(f"experiment {spec.name!r}: idle connections must be >= 0")
    if any(n < 1 for n in spec.msg_bytes) or spec.pipeline < 1:
        raise UsageError(f"experiment {spec.name!r}: sizes and pipeline must be >= 1")
    if spec.repeats is not None and spec.repeats < 1:
        raise UsageError(f"experiment {spec.name!r}: repeats must be >= 1")
    unknown_drains = [d for d in spec.et_drains if d not in ET_DRAINS]
    if unknown_drains:
        raise UsageError(
            f"experiment {spec.name!r}: unknown et_drains {unknown_drains} "
            f"(choose from {', '.join(ET_DRAINS)})"
        )
    budget = sweep_connection_budget()
    too_many = [c + i for c in spec.connections for i in spec.idle if c + i > budget]
    if too_many:
        raise UsageError(
            f"experiment {spec.name!r}: {max(too_many)} connections need as many descriptors "
            f"in the server and in the load generator; the fd limit allows {budget} "
            "(raise it with ulimit -n)"
        )


def apply_overrides(plan: SweepPlan, flags: PlanOverrides) -> SweepPlan:
    experiments = plan.experiments
    if flags.experiments is not None:
        known = {e.name for e in experiments}
        missing = [n for n in flags.experiments if n not in known]
        if missing:
            raise UsageError(
                f"unknown experiment(s) {', '.join(missing)} (have: {', '.join(sorted(known))})"
            )
        experiments = tuple(e for e in experiments if e.name in flags.experiments)
    if flags.impls is not None:
        unknown = [n for n in flags.impls if registry.find(n) is None]
        if unknown:
            raise UsageError(
                f"unknown implementation(s) {', '.join(unknown)} "
                f"(choose from {', '.join(impl_names())})"
            )
        wanted = flags.impls
        experiments = tuple(
            replace(e, impls=tuple(i for i in e.impls if i in wanted)) for e in experiments
        )
        experiments = tuple(e for e in experiments if e.impls)
    experiments = tuple(_override_grid(e, flags) for e in experiments)
    for e in experiments:
        validate_experiment(e)
    new = replace(
        plan,
        experiments=experiments,
        repeats=plan.repeats if flags.repeats is None else flags.repeats,
        duration_s=plan.duration_s if flags.duration_s is None else flags.duration_s,
        warmup_s=plan.warmup_s if flags.warmup_s is None else flags.warmup_s,
        retries=plan.retries if flags.retries is None else flags.retries,
    )
    if flags.repeats is not None:
        # --repeats is the user's explicit count: it overrides every experiment's own.
        new = replace(new, experiments=tuple(replace(e, repeats=None) for e in experiments))
    open_loop = [e for e in new.experiments if e.kind in OPEN_LOOP_KINDS | SCALING_KINDS]
    if not new.experiments or not (new.points() or open_loop):
        raise UsageError("the plan has no points left to measure")
    if new.repeats < 1 or new.duration_s <= 0 or new.warmup_s < 0 or new.retries < 0:
        raise UsageError("need repeats >= 1, retries >= 0, duration > 0 and warm-up >= 0")
    return new


def _override_grid(spec: ExperimentSpec, flags: PlanOverrides) -> ExperimentSpec:
    if flags.connections is not None and spec.kind != "idle":
        spec = replace(spec, connections=flags.connections)
    if flags.idle is not None and spec.kind == "idle":
        spec = replace(spec, idle=flags.idle)
    if flags.msg_bytes is not None and spec.kind == "ltet":
        spec = replace(spec, msg_bytes=flags.msg_bytes)
    return spec
