"""The pytest plugin: ``pytest --model=SPEC`` runs the built-in suite on each model and reports verdicts.

Registered through the ``pytest11`` entry point. What it adds:

* options ``--model`` (repeatable), ``--device``, ``--irmech-config``, ``--irmech-profile``,
  ``--irmech-report``, ``--irmech-json``, ``--irmech-save-baseline``, ``--irmech-baseline`` and
  ``--irmech-gate``;
* start-up checks, before any model loads, each a usage error (exit 4) naming the input: the configuration,
  the baseline (every key the comparison reads), output paths, ``--device``, duplicate ``--model`` s,
  per-model configuration keys that match no ``--model``, and the tokenizer files of local checkpoints;
* when ``--model`` is given and no test paths are, the built-in suite (``axioms/``, installed as
  ``irmechtest.suite``) is what gets collected, so the command works from any directory;
* the session-scoped ``ranker`` fixture, parametrised per model (each model is loaded once; a model that
  cannot load is reported once, its properties recorded as errors under its name, exit code 6);
* the ``irmech_property`` marker (property name, the ranker kinds it applies to, what its value is) and the
  ``irmech_verdict`` / ``irmech_settings`` fixtures that suite tests use;
* a terminal summary table and, on request, a self-contained HTML report, a JSON file of verdicts and a
  fingerprint, written atomically and only from a complete run (an interrupted or ``-x`` run writes
  ``*.partial.*`` files beside them and no baseline);
* the release gate: with ``--irmech-baseline`` the run's fingerprint is compared with the baseline after all
  tests ran (on the xdist controller, once every worker's verdicts are in); drift adds a failure. With
  ``--irmech-gate=baseline`` the exit status is the gate's alone (drift, required properties), not every
  measured failure. Exit codes: ``docs/configuration.md``.

Under pytest-xdist each worker sends its verdicts, model identities, load failures and the number of
property tests it collected to the controller through ``workeroutput``; only the controller writes files,
from verdicts sorted by (model, property).
"""

from __future__ import annotations

import enum
import functools
import json
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from _pytest.junitxml import xml_key

from irmechtest.behaviour.compliance import CachedScorer
from irmechtest.config import PROFILES, ConfigError, Configuration, load_configuration
from irmechtest.controls.twins import random_twin
from irmechtest.cost import announce
from irmechtest.loading import check_local_spec, load_ranker, model_name
from irmechtest.models.huggingface import DEFAULT_MODEL, DTYPES, ModelNotFoundError
from irmechtest.models.ranker import HookedRanker
from irmechtest.registry import PROPERTIES, Property
from irmechtest.report import fingerprint
from irmechtest.report.outputs import OutputPathError, check_output_paths, partial_path, write_atomic
from irmechtest.report.verdicts import Outcome, Verdict, jsonable

ITEM_VERDICT_KEY = pytest.StashKey[Verdict]()
ITEM_SETTINGS_KEY = pytest.StashKey[dict[str, Any]]()
STATE_KEY = pytest.StashKey["RunState"]()
WORKER_OUTPUT = "irmechtest"
GATE_FAILED = "baseline gate failed"  # the category the final summary line counts a failed gate under
OUTPUT_OPTIONS = ("irmech_json", "irmech_report", "irmech_save_baseline")


class ExitCode(enum.IntEnum):
    """irmechtest's own exit codes, above pytest's 0-5 so that CI can tell them apart (docs/configuration.md)."""

    MODEL_NOT_LOADED = 6  # a --model could not be loaded: nothing was measured on it
    INCOMPLETE = 7  # gate mode, no regression found: a property raised, or the run stopped before every verdict


class ModelLoadError(Exception):
    """A model that failed to load; reported once in the summary, one line per test that needed it."""


@dataclass
class RunResult:
    """What a finished run leaves for the files and the summary: its fingerprint, the gate's comparisons, why
    the run is incomplete ("" when complete), which files were written and which were withheld."""

    fingerprint: dict[str, Any]
    comparisons: list[fingerprint.Comparison] = field(default_factory=list)
    incomplete: str = ""
    written: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    required_failed: list[str] = field(default_factory=list)
    required_inconclusive: list[str] = field(default_factory=list)  # not established: too few pairs to decide


@dataclass
class RunState:
    """Everything the plugin keeps for one run, in one object.

    Every process (the controller, or each pytest-xdist worker) records what it measures: ``verdicts``,
    ``identities``, ``load_failures`` and ``selected``; a worker ends by sending those (``worker_output``) and
    the controller merges them (``merge_worker``). The controller alone loads the ``baseline``, counts the
    ``crashed`` workers and holds the run's ``result`` (fingerprint and gate).
    """

    configuration: Configuration = field(default_factory=Configuration)
    baseline: dict[str, Any] | None = None  # controller only
    verdicts: list[Verdict] = field(default_factory=list)
    models: dict[str, HookedRanker] = field(default_factory=dict)  # spec -> the loaded ranker (this process)
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_failures: dict[str, str] = field(default_factory=dict)  # spec -> why it could not be loaded
    selected: int = 0  # property tests selected to run (after -k / -m deselection)
    crashed: list[str] = field(default_factory=list)  # controller: workers that went down before sending
    result: RunResult | None = None  # controller: set once by _conclude

    def worker_output(self) -> str:
        """What a worker sends the controller, as JSON."""
        return json.dumps(
            {
                "verdicts": [jsonable(v.to_dict()) for v in self.verdicts],
                "identities": self.identities,
                "load_failures": self.load_failures,
                "selected": self.selected,
            }
        )

    def merge_worker(self, output: str, crashed: str | None) -> None:
        """Controller: take over a finished worker's output (``crashed`` names a worker that went down)."""
        data = json.loads(output)
        self.verdicts.extend(Verdict.from_dict(v) for v in data.get("verdicts", []))
        self.identities.update(data.get("identities", {}))
        self.load_failures.update(data.get("load_failures", {}))
        if crashed is not None:
            self.crashed.append(crashed)
        # Every worker collects every test; a worker that went down without output leaves the count short.
        self.selected = max(self.selected, data.get("selected", 0))


def run_state(config: pytest.Config) -> RunState:
    """The run's state (created by ``pytest_configure``)."""
    return config.stash.setdefault(STATE_KEY, RunState())


def suite_dir() -> Path:
    """Where the built-in suite lives: the installed ``irmechtest.suite`` package."""
    import irmechtest.suite

    return Path(next(iter(irmechtest.suite.__path__)))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irmechtest", "irmechtest: mechanistic tests of neural rankers")
    group.addoption(
        "--model",
        action="append",
        default=[],
        dest="irmech_models",
        metavar="SPEC",
        help=f"ranker to test (Hub id, local directory, alias, irmechtest:...); repeatable; default {DEFAULT_MODEL}",
    )
    group.addoption("--device", dest="irmech_device", default="cpu", help="torch device for the models (cpu)")
    group.addoption(
        "--dtype",
        dest="irmech_dtype",
        default="float32",
        choices=list(DTYPES),
        help="weights and activations of the models: float32 (default), bfloat16 or float16 (large rerankers)",
    )
    group.addoption(
        "--irmech-config",
        dest="irmech_config",
        metavar="PATH",
        help="TOML file with a [tool.irmechtest] table (default: the rootdir's pyproject.toml)",
    )
    group.addoption(
        "--irmech-profile",
        dest="irmech_profile",
        choices=PROFILES,
        help="settings profile: quick (default; small samples) or full (paper-scale samples)",
    )
    group.addoption("--irmech-report", dest="irmech_report", metavar="PATH", help="write the HTML report here")
    group.addoption("--irmech-json", dest="irmech_json", metavar="PATH", help="write the verdicts as JSON here")
    group.addoption(
        "--irmech-save-baseline",
        dest="irmech_save_baseline",
        metavar="PATH",
        help="write this run's fingerprint (every measured value, model identity, versions) here",
    )
    group.addoption(
        "--irmech-baseline",
        dest="irmech_baseline",
        metavar="PATH",
        help="compare this run's fingerprint with a saved one; drift beyond the tolerances fails the run",
    )
    group.addoption(
        "--irmech-gate",
        dest="irmech_gate",
        choices=("properties", "baseline"),
        default="properties",
        help="what the exit status reflects: every property verdict (properties, default), or only drift from "
        "--irmech-baseline and the configuration's required properties (baseline; for release workflows)",
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _load_configuration(config: pytest.Config) -> Configuration:
    path = config.getoption("irmech_config")
    if path:
        return load_configuration(Path(path), required=True)
    return load_configuration(config.rootpath / "pyproject.toml", required=False)


def _check_device(spec: str) -> None:
    """``--device`` must name a device this machine has, or every test would fail on it separately."""
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise pytest.UsageError(f"--device={spec}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise pytest.UsageError(f"--device={spec}: CUDA is not available here (torch {torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise pytest.UsageError(f"--device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise pytest.UsageError(f"--device={spec}: MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise pytest.UsageError(f"--device={spec}: unsupported device type; use cpu, cuda[:N] or mps")


def _check_inputs(config: pytest.Config) -> None:
    """Every start-up check that needs no model loaded (the configuration and baseline are read by the caller)."""
    specs = config.getoption("irmech_models")
    twice = [name for name, n in Counter(map(model_name, specs)).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"--model: {twice[0]} is given more than once (every property would run twice)")
    if specs:  # without --model a project's own tests run: its per-model tables may be for other runs
        run_state(config).configuration.check_models({spec: model_name(spec) for spec in specs})
        for spec in specs:
            check_local_spec(spec)
    _check_device(config.getoption("irmech_device"))
    check_output_paths({f"--{o.replace('_', '-')}": config.getoption(o) for o in OUTPUT_OPTIONS})
    gate = config.getoption("irmech_gate")
    if gate == "baseline" and not (config.getoption("irmech_baseline") or config.getoption("irmech_save_baseline")):
        raise pytest.UsageError("--irmech-gate=baseline needs --irmech-baseline=PATH or --irmech-save-baseline=PATH")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "irmech_property(name): a mechanistic property, defined in irmechtest.registry (or registered there by "
        "a conftest); on ranker kinds, or hook layouts (ranker.layout) it does not apply to, it "
        "is skipped and reported as not applicable. An unregistered property declares the same fields as marker "
        "keywords: applies_to, reason, layouts, quantity",
    )
    state = config.stash[STATE_KEY] = RunState()
    baseline = config.getoption("irmech_baseline")
    try:
        state.configuration = _load_configuration(config)
        load_baseline = baseline and not _is_worker(config)
        state.baseline = fingerprint.load(Path(baseline)) if load_baseline else None
        if not _is_worker(config):
            _check_inputs(config)
    except (ConfigError, fingerprint.FingerprintError, OutputPathError, ModelNotFoundError) as error:
        raise pytest.UsageError(str(error)) from None
    if config.getoption("irmech_models") and config.args_source is not pytest.Config.ArgsSource.ARGS:
        config.args = [str(suite_dir())]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Only our own ``ranker`` fixture is parametrised per --model; a project's own fixture of that name wins.
    definitions = getattr(metafunc, "_arg2fixturedefs", {}).get("ranker", ())
    if definitions and definitions[-1].func is ranker.__wrapped__:
        specs = metafunc.config.getoption("irmech_models") or [DEFAULT_MODEL]
        metafunc.parametrize("ranker", specs, indirect=True, scope="session")


@pytest.fixture(scope="session")
def ranker(request: pytest.FixtureRequest) -> HookedRanker:
    """The ranker under test, loaded once per session per ``--model``."""
    spec = getattr(request, "param", DEFAULT_MODEL)
    models, failures = run_state(request.config).models, run_state(request.config).load_failures
    if spec not in models and spec not in failures:
        prompt = run_state(request.config).configuration.prompt([spec]) or None
        options = request.config.getoption
        try:
            models[spec] = load_ranker(
                spec, device=options("irmech_device"), dtype=options("irmech_dtype"), prompt=prompt
            )
        except Exception as error:  # any cause: the run goes on with the other models and says why once
            failures[spec] = f"{type(error).__name__}: {error}"
        else:
            run_state(request.config).identities[models[spec].name] = jsonable(models[spec].identity)
            if not _is_worker(request.config):  # the run-cost estimate (irmechtest/cost.py)
                configuration, run_profile = run_state(request.config).configuration, profile(request.config)
                announce(
                    request,
                    spec,
                    models[spec],
                    configuration,
                    run_profile,
                    lambda marker, model: property_of(marker).not_applicable_reason(model),
                )
    if spec in failures:
        raise ModelLoadError(f"model {spec} could not be loaded (the cause is in the irmechtest summary)")
    return models[spec]


@pytest.fixture(scope="session")
def ranker_twin(ranker: HookedRanker) -> Callable[[], CachedScorer]:
    """The ranker's random-init twin (``controls.random_twin``), built on first call and kept for the session:
    behavioural verdicts compare with it where ``compliance.wants_twin`` says so."""
    return functools.cache(lambda: CachedScorer(random_twin(ranker)))


def profile(config: pytest.Config) -> str:
    """The settings profile of the run: ``--irmech-profile``, else the configuration's."""
    return config.getoption("irmech_profile") or run_state(config).configuration.profile


def _property_marker(node: pytest.Item) -> pytest.Mark | None:
    return node.get_closest_marker("irmech_property")


@pytest.fixture
def irmech_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of the marked property for this test's model and the run's profile.

    Model overrides match the ``--model`` spec or the ranker's name.
    """
    marker = _property_marker(request.node)
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses irmech_settings without an irmech_property marker")
    keys = []
    if "ranker" in request.fixturenames:
        callspec = getattr(request.node, "callspec", None)
        keys = [callspec.params.get("ranker", "") if callspec else "", request.getfixturevalue("ranker").name]
    settings = run_state(request.config).configuration.settings(marker.args[0], keys, profile(request.config))
    request.node.stash[ITEM_SETTINGS_KEY] = settings
    return settings


def property_of(marker: pytest.Mark) -> Property:
    """The property a marker names: its registry entry (whose marker takes the name only, so that it is defined
    once), or, for a property a user has not registered, one described by the marker's keywords."""
    name = marker.args[0]
    if name in PROPERTIES:
        if marker.kwargs:
            raise pytest.UsageError(
                f"irmech_property({name!r}) is defined in irmechtest.registry: its marker takes the name only, "
                f"got {', '.join(sorted(marker.kwargs))}"
            )
        return PROPERTIES[name]
    fields = {k: marker.kwargs[k] for k in ("applies_to", "reason", "layouts") if k in marker.kwargs}
    return Property(name, marker.kwargs.get("quantity", ""), marker.kwargs.get("measure", ""), **fields)


@pytest.fixture(autouse=True)
def _irmech_applicability(request: pytest.FixtureRequest) -> None:
    """Skip a property on models it does not apply to, and count it as not applicable."""
    marker = _property_marker(request.node)
    if marker is None or "ranker" not in request.fixturenames:
        return
    model = request.getfixturevalue("ranker")
    reason = property_of(marker).not_applicable_reason(model)
    if reason is not None:
        verdict = Verdict.not_applicable(marker.args[0], model.name, reason)
        _record(request, verdict)
        pytest.skip(verdict.message())


def _record(request: pytest.FixtureRequest, verdict: Verdict) -> None:
    """Keep the verdict for the run, with the settings it was measured under (they join the fingerprint)."""
    settings = request.node.stash.get(ITEM_SETTINGS_KEY, None)
    if settings is not None:
        verdict.details.setdefault("settings", settings)
    marker = _property_marker(request.node)
    if marker is not None and not verdict.quantity:
        verdict.quantity = property_of(marker).quantity
    run_state(request.config).verdicts.append(verdict)
    request.node.stash[ITEM_VERDICT_KEY] = verdict


def _junit_xunit2(config: pytest.Config) -> bool:
    """Whether ``--junitxml`` writes xunit2 (pytest's default family), whose test cases cannot carry properties."""
    xml = config.stash.get(xml_key, None)
    return xml is not None and xml.family == "xunit2"


def _junit_fields(verdict: Verdict) -> dict[str, Any]:
    return {
        "property": verdict.property,
        "model": verdict.model,
        "outcome": verdict.outcome.value,
        "value": verdict.value,
        "threshold": verdict.threshold,
    }


def _record_property(request: pytest.FixtureRequest, name: str, value: Any) -> None:
    """pytest's ``record_property`` without its fixture (which warns under xunit2 even when not called)."""
    request.node.user_properties.append((name, value))


@pytest.fixture
def irmech_verdict(request: pytest.FixtureRequest) -> Callable[[Verdict], Verdict]:
    """Record a verdict (report, JSON, JUnit properties) and pass, fail or skip the test by it."""

    def check(verdict: Verdict) -> Verdict:
        _record(request, verdict)
        if not _junit_xunit2(request.config):  # xunit2 has no per-test properties: see _junit_properties
            for key, value in _junit_fields(verdict).items():
                _record_property(request, f"irmech_{key}", value)
        if verdict.outcome in (Outcome.NOT_APPLICABLE, Outcome.INCONCLUSIVE):  # neither passed nor failed
            pytest.skip(verdict.message())
        if verdict.outcome is not Outcome.PASSED:
            pytest.fail(verdict.message(), pytrace=False)
        return verdict

    return check


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    """A property test that raised before reaching a verdict shows in the report as an error."""
    report = yield
    marker = _property_marker(item)
    load_failed = call.excinfo is not None and isinstance(call.excinfo.value, ModelLoadError)
    if load_failed:
        report.longrepr = str(call.excinfo.value)  # one line per test; the cause once, in the summary
    if marker is not None and report.failed and ITEM_VERDICT_KEY not in item.stash:
        params = getattr(getattr(item, "callspec", None), "params", {})
        model = item.funcargs.get("ranker") if hasattr(item, "funcargs") else None
        # The model's name, as its other verdicts carry it: never the parametrisation id ("...-LNC1").
        name = model.name if model is not None else model_name(params["ranker"]) if "ranker" in params else item.name
        if load_failed:
            message = f"could not be loaded: {run_state(item.config).load_failures[params['ranker']]}"
        else:
            message = str(call.excinfo.value) if call.excinfo is not None else report.longreprtext
        verdict = Verdict(marker.args[0], name, None, None, reason=message[:2000], outcome=Outcome.ERROR)
        run_state(item.config).verdicts.append(verdict)
        item.stash[ITEM_VERDICT_KEY] = verdict
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the property tests selected to run: a run is complete when each of them left a verdict."""
    run_state(session.config).selected = sum(1 for item in session.items if _property_marker(item) is not None)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a finished worker's verdicts and model identities."""
    output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, "{}")
    crashed = None if error is None else str(getattr(node, "gateway", node))
    run_state(node.config).merge_worker(output, crashed)


def _incomplete(session: pytest.Session, exitstatus: int) -> str:
    """Why the run's verdicts are not the full set of the selected properties ("" when they are)."""
    config = session.config
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return "interrupted"
    if session.shouldfail or session.shouldstop:
        return f"stopped early ({session.shouldfail or session.shouldstop})"
    crashed = run_state(config).crashed
    if crashed:
        return f"xdist worker(s) {', '.join(crashed)} went down"
    selected, measured = run_state(config).selected, len(run_state(config).verdicts)
    if measured < selected:
        return f"{measured} of {selected} selected properties produced a verdict"
    return ""


def _conclude(config: pytest.Config) -> RunResult:
    """Sort the verdicts, build the fingerprint and run the gate, once per run."""
    state = run_state(config)
    if state.result is None:
        # Through JSON and back, as an xdist worker's verdicts come, so serial and xdist runs render alike.
        verdicts = state.verdicts
        verdicts[:] = sorted(
            (Verdict.from_dict(jsonable(v.to_dict())) for v in verdicts), key=lambda v: (v.model, v.property)
        )
        result = RunResult(fingerprint.build(verdicts, state.identities, profile(config)))
        if state.baseline is not None and verdicts:
            result.comparisons = fingerprint.compare(state.baseline, result.fingerprint)
        required = state.configuration.required
        result.required_failed = [
            f"[{v.model}] {v.property}: {v.outcome.value}"
            for v in verdicts
            if v.property in required and v.outcome in (Outcome.FAILED, Outcome.ERROR)
        ]
        result.required_inconclusive = [
            f"[{v.model}] {v.property}: inconclusive ({v.sample_note()})"
            for v in verdicts
            if v.property in required and v.outcome is Outcome.INCONCLUSIVE
        ]
        state.result = result
    return state.result


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    """The release gate: after every test (and every xdist worker) is done, drift counts as a failure."""
    outcome = yield
    if not _is_worker(session.config) and fingerprint.failed(_conclude(session.config).comparisons):
        session.testsfailed += 1
    return outcome


def _write_outputs(config: pytest.Config, result: RunResult) -> None:
    """JSON, baseline and report; from an incomplete run as ``*.partial.*`` beside the targets, and no baseline."""
    verdicts = run_state(config).verdicts
    status = {"complete": not result.incomplete, "incomplete": result.incomplete}

    def target(option: str) -> Path | None:
        value = config.getoption(option, None)
        if not value:
            return None
        return partial_path(Path(value)) if result.incomplete else Path(value)

    if path := target("irmech_json"):
        data = {**status, "verdicts": [jsonable(v.to_dict()) for v in verdicts]}
        result.written.append(f"JSON verdicts: {write_atomic(path, json.dumps(data, indent=2, sort_keys=True))}")
    if save := config.getoption("irmech_save_baseline", None):
        unmeasured = [f"[{v.model}] {v.property}" for v in verdicts if v.outcome is Outcome.ERROR]
        if result.incomplete or unmeasured or not verdicts:
            why = result.incomplete or "no verdicts"
            if unmeasured:
                more = f" and {len(unmeasured) - 3} more" if len(unmeasured) > 3 else ""
                why = f"{len(unmeasured)} properties could not run: {', '.join(unmeasured[:3])}{more}"
            result.withheld.append(f"baseline NOT saved to {save}: the run is incomplete ({why})")
        else:
            result.written.append(f"baseline saved: {fingerprint.save(Path(save), result.fingerprint)}")
    if path := target("irmech_report"):
        from irmechtest.report.html import write_html

        write_html(
            path,
            verdicts,
            fingerprint=result.fingerprint,
            comparisons=result.comparisons,
            baseline=config.getoption("irmech_baseline") or "",
            incomplete=result.incomplete,
        )
        result.written.append(f"HTML report: {path}")
    if result.incomplete and result.written:
        result.withheld.append("existing complete outputs were left as they were; the partial ones are marked")


def _junit_properties(config: pytest.Config, verdicts: list[Verdict]) -> None:
    """Under xunit2 every verdict goes to the test suite's properties (valid there; test cases may have none)."""
    if _junit_xunit2(config):
        xml = config.stash[xml_key]
        for v in verdicts:
            for key, value in _junit_fields(v).items():
                if key not in ("model", "property"):
                    xml.add_global_property(f"irmech[{v.model}][{v.property}].{key}", value)


def _exit_status(session: pytest.Session, result: RunResult) -> int:
    """Our exit codes on top of pytest's (docs/configuration.md): a model that could not load is not a failed
    property, and in gate mode only drift and required properties fail; pytest's own 2-5 stand."""
    status = session.exitstatus
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return status
    if run_state(session.config).load_failures:
        return ExitCode.MODEL_NOT_LOADED
    if session.config.getoption("irmech_gate") != "baseline":
        return status
    if result.incomplete:
        return ExitCode.INCOMPLETE
    if fingerprint.failed(result.comparisons) or result.required_failed:
        return pytest.ExitCode.TESTS_FAILED  # a regression found stands, whether or not another property raised
    errors = any(v.outcome is Outcome.ERROR for v in run_state(session.config).verdicts)
    # Not established: a required property, or one the baseline passed, rests on too few pairs to decide.
    unsettled = result.required_inconclusive or fingerprint.unsettled(result.comparisons)
    return ExitCode.INCOMPLETE if errors or unsettled else pytest.ExitCode.OK


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        config.workeroutput[WORKER_OUTPUT] = run_state(config).worker_output()
        return
    result = _conclude(config)
    result.incomplete = _incomplete(session, exitstatus)
    _write_outputs(config, result)
    _junit_properties(config, run_state(config).verdicts)
    session.exitstatus = _exit_status(session, result)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    verdicts = run_state(config).verdicts
    failures = run_state(config).load_failures
    if failures:
        terminalreporter.section("irmechtest: models that could not be loaded", red=True)
        for spec, cause in failures.items():
            n = sum(1 for v in verdicts if v.model == model_name(spec) and v.outcome is Outcome.ERROR)
            terminalreporter.write_line(f"{spec}: {cause}", red=True, bold=True)
            terminalreporter.write_line(f"  {n} properties recorded as errors; exit code {ExitCode.MODEL_NOT_LOADED}")
    if verdicts:
        terminalreporter.section("irmechtest verdicts")
        width = max(len(v.property) for v in verdicts)
        for v in verdicts:
            text = ", ".join(t for t in (v.value_text(), v.qualifier()) if t)
            terminalreporter.write_line(f"{v.outcome.value:>14}  {v.property:<{width}}  {v.model}  {text}")
    if run_state(config).result is None:
        return
    result = run_state(config).result
    comparisons = result.comparisons
    if comparisons:
        head, *lines = fingerprint.summary(comparisons, config.getoption("irmech_baseline"))
        failed = fingerprint.failed(comparisons)
        terminalreporter.section("irmechtest baseline gate", red=failed, green=not failed)
        terminalreporter.write_line(head, red=failed, green=not failed, bold=True)
        for line in lines:
            terminalreporter.write_line(line)
        if failed:
            # Every test may have passed: the final "N passed" line must still say that the run failed.
            # Other plugins read every entry of ``stats`` as a report, so the entry is one.
            gate = pytest.TestReport(
                "irmechtest::baseline-gate", ("irmechtest", None, "baseline gate"), {}, "failed", head, "call"
            )
            terminalreporter.stats.setdefault(GATE_FAILED, []).append(gate)
    if config.getoption("irmech_gate") == "baseline":
        _gate_mode_summary(terminalreporter, config, result)
    if result.incomplete and (verdicts or result.withheld):
        terminalreporter.write_line(f"irmechtest: run incomplete: {result.incomplete}", yellow=True, bold=True)
    for line in result.written:
        terminalreporter.write_line(line)
    for line in result.withheld:
        terminalreporter.write_line(line, yellow=True)


def _gate_mode_summary(terminalreporter: Any, config: pytest.Config, result: RunResult) -> None:
    """What the exit status of ``--irmech-gate=baseline`` was decided by."""
    verdicts = run_state(config).verdicts
    measured = sum(1 for v in verdicts if v.outcome is Outcome.FAILED)
    terminalreporter.section("irmechtest gate (--irmech-gate=baseline)")
    for line in result.required_failed:
        terminalreporter.write_line(f"required property not passed: {line}", red=True)
    for line in result.required_inconclusive:
        terminalreporter.write_line(f"required property not established: {line}", yellow=True)
    if fingerprint.unsettled(result.comparisons):
        terminalreporter.write_line(
            "properties the baseline passed are now inconclusive (the gate section lists them): not established, "
            f"exit {ExitCode.INCOMPLETE} unless a regression was found",
            yellow=True,
        )
    terminalreporter.write_line(
        f"the exit status reflects the baseline gate and required properties only; {measured} measured failure(s) "
        "are findings, not regressions"
    )
