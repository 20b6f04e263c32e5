"""Mechanistic fingerprints: every measured value of a run per model, as versioned JSON, and the release
gate that compares a new run with a saved fingerprint (the baseline).

A fingerprint is built from verdicts alone, so a new property joins it without code here: its value,
threshold and outcome, its interval (``details["ci_low"]`` / ``["ci_high"]``), its component set
(``details["components"]``) and every other flat detail (effects, seeds, sample sizes, pair-set hashes).
The schema is documented in ``docs/configuration.md``; :data:`SCHEMA_VERSION` changes with it.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from irmechtest.report.outputs import write_atomic
from irmechtest.report.verdicts import Outcome, Verdict, jsonable

SCHEMA = "irmechtest-fingerprint"
SCHEMA_VERSION = 1
_LIBRARIES = ("irmechtest", "torch", "transformers", "tokenizers", "numpy")
_WORSE_IF_LOWER = (">=", ">")


class FingerprintError(ValueError):
    """A baseline file that cannot be used; the message names the file and the key."""


def environment() -> dict[str, str]:
    """Library versions a fingerprint records: a drift may come from them rather than from the model."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _flat(value: Any) -> bool:
    """A detail worth fingerprinting: a scalar, or a list / mapping of scalars (not texts of examples)."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, scalar):
        return True
    if isinstance(value, list):
        return all(isinstance(v, scalar) for v in value)
    return isinstance(value, dict) and all(isinstance(v, scalar) for v in value.values())


def property_entry(verdict: Verdict) -> dict[str, Any]:
    """One verdict as fingerprint data: outcome, value vs threshold, resolved settings, flat measurements."""
    details = jsonable(verdict.details)
    return {
        "outcome": verdict.outcome.value,
        "value": _number(verdict.value),
        "threshold": verdict.threshold,
        "comparison": verdict.comparison,
        "sample": dict(verdict.sample),
        "min_sample": verdict.min_sample,
        "settings": details.get("settings", {}),
        "measured": {k: v for k, v in sorted(details.items()) if k != "settings" and _flat(v)},
    }


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an unmeasurable value is stored as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def build(verdicts: Iterable[Verdict], identities: Mapping[str, Mapping[str, Any]], profile: str) -> dict[str, Any]:
    """The fingerprint of a run: per model its identity and one entry per property, sorted by name."""
    models: dict[str, dict[str, Any]] = {}
    for verdict in sorted(verdicts, key=lambda v: (v.model, v.property)):
        model = models.setdefault(
            verdict.model, {"identity": jsonable(dict(identities.get(verdict.model, {}))), "properties": {}}
        )
        model["properties"][verdict.property] = property_entry(verdict)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile,
        "environment": environment(),
        "models": models,
    }


def save(path: Path, fingerprint: Mapping[str, Any]) -> Path:
    """Write atomically: an interrupted save leaves the previous baseline as it was."""
    return write_atomic(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def _require(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise FingerprintError(f"{where}: missing key {key!r}")
    if not isinstance(mapping[key], kind):
        raise FingerprintError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {mapping[key]!r}")
    return mapping[key]


def load(path: Path) -> dict[str, Any]:
    """A baseline fingerprint, checked: valid JSON, this schema and version, every key the gate reads (so the
    comparison after the run cannot fail on the baseline's layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FingerprintError(f"{path}: baseline file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FingerprintError(f"{path}: not valid JSON: {error}") from None
    where = str(path)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise FingerprintError(f'{where}: not an irmechtest fingerprint (no "schema": "{SCHEMA}")')
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        advice = (
            "it was written by a newer irmechtest: upgrade irmechtest (pip install -U irmechtest)"
            if newer
            else "save the baseline again with --irmech-save-baseline"
        )
        raise FingerprintError(
            f"{where}: fingerprint schema version {version!r}; this irmechtest reads version {SCHEMA_VERSION} "
            f"({advice})"
        )
    if not isinstance(data.get("environment", {}), dict):
        raise FingerprintError(f"{where}.environment: expected dict, got {data['environment']!r}")
    models = _require(data, "models", dict, where)
    if not models:
        raise FingerprintError(f"{where}: the baseline holds no models (it was saved from a run without verdicts)")
    for model, entry in models.items():
        here = f"{where}: models[{model!r}]"
        _require(entry, "identity", dict, here)
        for name, prop in _require(entry, "properties", dict, here).items():
            there = f"{here}.properties[{name!r}]"
            outcome = _require(prop, "outcome", str, there)
            if outcome not in {o.value for o in Outcome}:
                raise FingerprintError(f"{there}.outcome: unknown outcome {outcome!r}")
            _require(prop, "value", (int, float, type(None)), there)
            _require(prop, "comparison", str, there)
            _require(prop, "measured", dict, there)
            delta = _require(prop, "settings", dict, there).get("baseline_delta", 0.0)
            if isinstance(delta, bool) or not isinstance(delta, int | float):
                raise FingerprintError(f"{there}.settings.baseline_delta: expected a number, got {delta!r}")
    return data


@dataclass
class Comparison:
    """One model of a run against its reference in the baseline: drifts fail the gate, notes inform."""

    model: str
    reference: str | None
    drifts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    # Properties the baseline passed that are now inconclusive: not a regression found, nor a confirmation.
    unsettled: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        against = f" (against baseline model {self.reference})" if self.reference not in (None, self.model) else ""
        return [
            f"[{self.model}]{against}",
            *(f"  - {d}" for d in self.drifts),
            *(f"  ? {u}" for u in self.unsettled),
            *(f"    note: {n}" for n in self.notes),
        ]


def reference(baseline: Mapping[str, Any], model: str) -> str | None:
    """The baseline model a run's model is compared with: the same name, or the only one there is."""
    models = baseline["models"]
    if model in models:
        return model
    return next(iter(models)) if len(models) == 1 else None


def _interval(measured: Mapping[str, Any]) -> tuple[float, float] | None:
    low, high = measured.get("ci_low"), measured.get("ci_high")
    return (low, high) if isinstance(low, int | float) and isinstance(high, int | float) else None


def compare_property(name: str, old: Mapping[str, Any], new: Mapping[str, Any], comparison: Comparison) -> None:
    """The per-property tolerances: see ``docs/configuration.md`` (release gate)."""
    inconclusive = Outcome.INCONCLUSIVE.value
    if inconclusive in (old["outcome"], new["outcome"]) and old["outcome"] != new["outcome"]:
        # A value resting on too few pairs is no reference, nor a measurement to hold against one.
        change = f"{name}: outcome {old['outcome']} -> {new['outcome']}"
        if new["outcome"] == inconclusive:
            short = {k: n for k, n in new.get("sample", {}).items() if n < new.get("min_sample", 0)}
            counts = ", ".join(f"{n} {what}" for what, n in short.items())
            change += f" ({counts}, needs {new.get('min_sample')}): no longer established"
        (comparison.unsettled if old["outcome"] == Outcome.PASSED.value else comparison.notes).append(change)
        return
    if old["outcome"] == Outcome.PASSED.value and new["outcome"] != Outcome.PASSED.value:
        comparison.drifts.append(f"{name}: outcome passed -> {new['outcome']}")
    was, now = old["value"], new["value"]
    if was is not None and now is not None:
        comparison.deltas[name] = now - was
        lower_is_worse = new["comparison"] in _WORSE_IF_LOWER
        worse = (was - now) if lower_is_worse else (now - was)
        interval = _interval(old["measured"])
        change = f"{was:.4g} -> {now:.4g} ({now - was:+.3g}"
        if interval is not None:
            low, high = interval
            if (now < low) if lower_is_worse else (now > high):
                side = "below" if lower_is_worse else "above"
                comparison.drifts.append(
                    f"{name}: value {change}), {side} the baseline's interval [{low:.4g}, {high:.4g}]"
                )
        else:
            tolerance = new["settings"].get("baseline_delta", old["settings"].get("baseline_delta", 0.0))
            if worse > tolerance:
                comparison.drifts.append(f"{name}: value {change}; tolerance {tolerance:g})")
    components_was = old["measured"].get("components")
    if isinstance(components_was, list):
        components_now = new["measured"].get("components") or []
        lost = [c for c in components_was if c not in components_now]
        gained = [c for c in components_now if c not in components_was]
        if lost:
            comparison.drifts.append(f"{name}: lost components {', '.join(map(str, lost))} (baseline {components_was})")
        if gained:
            comparison.notes.append(f"{name}: new components {', '.join(map(str, gained))}")
    for key in sorted(set(old["measured"]) & set(new["measured"])):
        if "md5" in key and old["measured"][key] != new["measured"][key]:
            comparison.notes.append(f"{name}: {key} changed, the values come from different samples")


def compare(baseline: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> list[Comparison]:
    """Every model of ``fingerprint`` against its reference in ``baseline``."""
    out = []
    for model, entry in fingerprint["models"].items():
        ref = reference(baseline, model)
        comparison = Comparison(model, ref)
        out.append(comparison)
        if ref is None:
            comparison.drifts.append(f"not in the baseline, which has {', '.join(baseline['models'])}")
            continue
        old = baseline["models"][ref]
        for name in sorted(set(old["properties"]) | set(entry["properties"])):
            if name not in entry["properties"]:
                comparison.notes.append(f"{name}: in the baseline, not measured in this run")
            elif name not in old["properties"]:
                comparison.notes.append(f"{name}: not in the baseline")
            else:
                compare_property(name, old["properties"][name], entry["properties"][name], comparison)
        for key in ("weights_sha256", "revision"):
            was, now = old["identity"].get(key), entry["identity"].get(key)
            if was != now:
                comparison.notes.append(f"{key} {was} -> {now}")
    for name, was in sorted(baseline.get("environment", {}).items()):
        now = fingerprint["environment"].get(name)
        if was != now:
            for comparison in out:
                comparison.notes.append(f"{name} {was} -> {now}")
    return out


def failed(comparisons: Sequence[Comparison]) -> bool:
    return any(c.drifts for c in comparisons)


def unsettled(comparisons: Sequence[Comparison]) -> bool:
    """Whether a property the baseline passed is now inconclusive (gate mode: the run is incomplete, exit 7)."""
    return any(c.unsettled for c in comparisons)


def summary(comparisons: Sequence[Comparison], source: str) -> list[str]:
    """The gate's readable diff, one line per drift, unsettled property or note, headed by its verdict."""
    n = sum(len(c.drifts) for c in comparisons)
    head = f"baseline gate FAILED: {n} drift(s) from {source}" if n else f"baseline gate passed against {source}"
    if k := sum(len(c.unsettled) for c in comparisons):
        head += f"; {k} propert{'y' if k == 1 else 'ies'} passed in the baseline now inconclusive (too few pairs)"
    return [head, *(line for c in comparisons for line in c.lines())]
