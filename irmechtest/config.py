"""Settings of the built-in properties: literature defaults, the ``quick`` / ``full`` profiles and the
user's ``[tool.irmechtest]`` overrides, resolved per (property, model, profile) and validated.

Each property's settings and what the paper-scale ``full`` profile changes are defined once, in its
``registry.Property``; every default says there where it comes from, so a user can tell a literature figure
from a product choice. This module adds the settings every property has (``GATE_DEFAULTS``), validates
values and resolves the layers. The file schema is in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irmechtest.behaviour.compliance import RANDOM_TWIN
from irmechtest.registry import PROPERTIES, get_property

PROFILES = ("quick", "full")


# Settings every property has: how much worse a value without an interval may get against a baseline
# before the release gate fails (values with an interval fail when they leave it; see fingerprint.py).
GATE_DEFAULTS: dict[str, Any] = {"baseline_delta": 0.05}

# Settings whose meaning fixes their range, whatever property they belong to.
_RANGES: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),  # rates and |r|
    "tie_band": (0.0, math.inf),
    "baseline_delta": (0.0, math.inf),
}
# Settings whose text values are a fixed set (tie_band may also be a number).
_CHOICES: dict[str, tuple[str, ...]] = {
    "tie_band": ("calibrate", "control"),
    "random_twin": RANDOM_TWIN,
    "head_screen": ("none", "attribution"),
}
_POSITIVE_INTS = ("n_", "top_k", "verify_top_k")  # sample and result sizes: at least 1


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the file and the key."""


def check_value(name: str, key: str, value: Any, where: str) -> Any:
    """``value`` if it fits setting ``key`` of property ``name`` (type of the default, range), else ConfigError."""
    known = {**GATE_DEFAULTS, **get_property(name).settings}
    if key not in known:
        raise ConfigError(f"{where}: property {name!r} has no setting {key!r}; settings: {', '.join(sorted(known))}")
    default = known[key]
    if key == "tie_band":
        expected: tuple[type, ...] = (int, float, str)  # a number, or how to calibrate one
    elif isinstance(default, bool) or default is None:
        expected = (bool,) if isinstance(default, bool) else (str, int, float, bool)
    elif isinstance(default, int):
        expected = (int,)
    elif isinstance(default, float):
        expected = (int, float)
    else:
        expected = (type(default),)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        kind = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}")
    if key == "exclude_queries":
        return _query_ids(value, where)
    if isinstance(value, str) and key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be finite, got {value!r}")
    low, high = _RANGES.get(key, (-math.inf, math.inf))
    if isinstance(default, int) and not isinstance(default, bool):
        low = max(low, 1 if key.startswith(_POSITIVE_INTS) else 0)
        if key == "threshold":
            high = math.inf  # a count (e.g. contextualisation heads found), not a rate
    if isinstance(value, int | float) and not isinstance(value, bool) and not low <= value <= high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise ConfigError(f"{where}: {key} must be {bounds}, got {value!r}")
    return value


def _query_ids(value: list[Any], where: str) -> list[str]:
    """Query ids as strings: TOML users write TREC's numeric ids as numbers or strings alike."""
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, str | int) or v == ""]
    if bad:
        raise ConfigError(f"{where}: exclude_queries must be a list of query ids (strings or integers), got {bad[0]!r}")
    return [str(v) for v in value]


def property_config(
    name: str, overrides: Mapping[str, Any] | None = None, *, profile: str = "quick", where: str = "overrides"
) -> dict[str, Any]:
    """The settings of one property under ``profile``, updated with checked ``overrides``."""
    prop = get_property(name)
    if profile not in PROFILES:
        raise ConfigError(f"{where}: profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    settings = {**GATE_DEFAULTS, **prop.settings}
    if profile == "full":
        settings.update(prop.full_profile)
    for key, value in (overrides or {}).items():
        settings[key] = check_value(name, key, value, where)
    return settings


@dataclass(frozen=True)
class Scope:
    """Overrides that apply in one scope (everywhere, or one model): per property, and per profile."""

    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    prompt: dict[str, str] = field(default_factory=dict)  # a decoder reranker's template (models only)

    def layers(self, profile: str) -> Iterable[dict[str, dict[str, Any]]]:
        yield self.properties
        yield self.profiles.get(profile, {})


@dataclass(frozen=True)
class Configuration:
    """A parsed, validated ``[tool.irmechtest]`` table (empty when there is none)."""

    source: str = "built-in defaults"
    profile: str = "quick"
    everywhere: Scope = field(default_factory=Scope)
    models: dict[str, Scope] = field(default_factory=dict)
    # Properties that gate a release in ``--irmech-gate=baseline`` mode whatever the baseline says.
    required: tuple[str, ...] = ()

    def check_models(self, names: Mapping[str, str]) -> None:
        """Refuse a ``models."<key>"`` table that matches none of the run's models (``names``: spec -> the name
        its ranker carries): a mistyped key would otherwise drop a per-model threshold without a word."""
        known = set(names) | set(names.values())
        for key in self.models:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f'{self.source}: [tool.irmechtest.models."{key}"] matches no --model of this run '
                    f"(models: {', '.join(names)}){hint}"
                )

    def settings(self, name: str, model_keys: Iterable[str] = (), profile: str | None = None) -> dict[str, Any]:
        """Settings of property ``name`` for the model known by any of ``model_keys`` (spec, name).

        Later layers win: defaults, the profile's defaults, ``properties``, ``profiles.P.properties``, then
        the same two for the model.
        """
        profile = profile or self.profile
        scopes = [self.everywhere, *(self.models[k] for k in dict.fromkeys(model_keys) if k in self.models)]
        overrides: dict[str, Any] = {}
        for scope in scopes:
            for layer in scope.layers(profile):
                overrides.update(layer.get(name, {}))
        return property_config(name, overrides, profile=profile, where=self.source)

    def prompt(self, model_keys: Iterable[str]) -> dict[str, str]:
        """A decoder reranker's prompt overrides for the model known by any of ``model_keys`` (decoder.py)."""
        prompt: dict[str, str] = {}
        for key in dict.fromkeys(model_keys):
            if key in self.models:
                prompt.update(self.models[key].prompt)
        return prompt


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value


def _only(table: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _pair_file(value: str, base: Path | None, where: str) -> str:
    """A ``pairs`` setting naming a TSV file: relative to the configuration file's folder (not the working
    directory, which changes with where pytest is started), and present. Source names pass unchanged."""
    if not value.endswith(".tsv"):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigError(f"{where}: pairs file {value!r} not found (looked at {path})")
    return str(path)


def _parse_properties(value: Any, where: str, base: Path | None) -> dict[str, dict[str, Any]]:
    out = {}
    for name, settings in _table(value, where).items():
        here = f"{where}.{name}" if name.replace("-", "").isalnum() else f'{where}."{name}"'
        if name not in PROPERTIES:
            raise ConfigError(f"[{here}]: unknown property {name!r}; known: {', '.join(sorted(PROPERTIES))}")
        out[name] = {key: check_value(name, key, v, f"[{here}]") for key, v in _table(settings, f"[{here}]").items()}
        if isinstance(out[name].get("pairs"), str):
            out[name]["pairs"] = _pair_file(out[name]["pairs"], base, f"[{here}]")
    return out


def _parse_prompt(value: Any, where: str) -> dict[str, str]:
    from irmechtest.models.decoder import PROMPT_KEYS  # only a run that sets a prompt needs the decoder (torch)

    table = _table(value, f"[{where}]")
    _only(table, PROMPT_KEYS, f"[{where}]")
    for key, text in table.items():
        if not isinstance(text, str) or not text:
            raise ConfigError(f"[{where}]: {key} must be a non-empty string, got {text!r}")
    return dict(table)


def _parse_scope(table: dict[str, Any], where: str, base: Path | None, extra: Iterable[str] = ()) -> Scope:
    _only(table, ("properties", "profiles", *extra), f"[{where}]")
    profiles = {}
    for profile, sub in _table(table.get("profiles", {}), f"[{where}.profiles]").items():
        here = f"{where}.profiles.{profile}"
        if profile not in PROFILES:
            raise ConfigError(f"[{here}]: unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
        _only(_table(sub, f"[{here}]"), ("properties",), f"[{here}]")
        profiles[profile] = _parse_properties(sub.get("properties", {}), f"{here}.properties", base)
    prompt = _parse_prompt(table["prompt"], f"{where}.prompt") if "prompt" in table else {}
    return Scope(_parse_properties(table.get("properties", {}), f"{where}.properties", base), profiles, prompt)


def _parse_required(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[tool.irmechtest]: required must be a list of property names, got {value!r}")
    unknown = [v for v in value if v not in PROPERTIES]
    if unknown:
        raise ConfigError(
            f"[tool.irmechtest]: required: unknown property {unknown[0]!r}; known: {', '.join(PROPERTIES)}"
        )
    return tuple(value)


def parse_configuration(table: dict[str, Any], source: str, base: Path | None = None) -> Configuration:
    """Validate an ``[tool.irmechtest]`` table; a ConfigError names ``source`` and the offending key.

    Relative pair files resolve against ``base``, the configuration file's folder.
    """
    try:
        _table(table, "[tool.irmechtest]")
        everywhere = _parse_scope(table, "tool.irmechtest", base, extra=("profile", "models", "required"))
        profile = table.get("profile", "quick")
        if profile not in PROFILES:
            raise ConfigError(f"[tool.irmechtest]: profile must be one of {', '.join(PROFILES)}, got {profile!r}")
        models = {
            model: _parse_scope(
                _table(sub, f'[tool.irmechtest.models."{model}"]'),
                f'tool.irmechtest.models."{model}"',
                base,
                ("prompt",),
            )
            for model, sub in _table(table.get("models", {}), "[tool.irmechtest.models]").items()
        }
        required = _parse_required(table.get("required", []))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return Configuration(source, profile, everywhere, models, required)


def load_configuration(path: Path, *, required: bool) -> Configuration:
    """``[tool.irmechtest]`` of a TOML file: the rootdir's ``pyproject.toml``, or a file named by an option.

    A missing file or table is an error when ``required`` (named by an option), else the built-in defaults.
    """
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: configuration file not found")
        return Configuration()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    table = data.get("tool", {}).get("irmechtest") if isinstance(data.get("tool"), dict) else None
    if table is None:
        if required:
            raise ConfigError(f"{path}: no [tool.irmechtest] table")
        return Configuration()
    return parse_configuration(table, str(path), path.resolve().parent)
