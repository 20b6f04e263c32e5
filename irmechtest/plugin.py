"""The pytest plugin: ``pytest --model=SPEC`` runs the built-in suite on each model and reports verdicts.

Registered through the ``pytest11`` entry point. What it adds:

* options ``--model`` (repeatable), ``--device``, ``--irmech-config``, ``--irmech-profile``,
  ``--irmech-report``, ``--irmech-json``, ``--irmech-save-baseline`` and ``--irmech-baseline``;
* the configuration (``[tool.irmechtest]`` in the rootdir's pyproject.toml, or ``--irmech-config``) and
  the baseline are read and validated at start-up, so a bad file is a usage error before any model loads;
* when ``--model`` is given and no test paths are, the built-in suite (``axioms/``, installed as
  ``irmechtest.suite``) is what gets collected, so the command works from any directory;
* the session-scoped ``ranker`` fixture, parametrised per model (each model is loaded once);
* the ``irmech_property`` marker (property name and the ranker kinds it applies to) and the
  ``irmech_verdict`` / ``irmech_settings`` fixtures that suite tests use;
* a terminal summary table and, on request, a self-contained HTML report, a JSON file of verdicts and a
  fingerprint;
* the release gate: with ``--irmech-baseline`` the run's fingerprint is compared with the baseline after all
  tests ran (on the xdist controller, once every worker's verdicts are in); drift adds a failure, so the
  exit code is pytest's TESTS_FAILED, and the diff is printed in the terminal summary and the report.

Under pytest-xdist each worker sends its verdicts and model identities to the controller through
``workeroutput``; only the controller writes files, from verdicts sorted by (model, property).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from irmechtest import fingerprint
from irmechtest.config import PROFILES, ConfigError, Configuration, load_configuration
from irmechtest.loading import DEFAULT_MODEL, load_ranker
from irmechtest.models import HookedRanker
from irmechtest.patching import NoEffectError
from irmechtest.verdicts import Outcome, Verdict, jsonable

ALL_KINDS = ("cross-encoder", "bi-encoder")
VERDICTS_KEY = pytest.StashKey[list[Verdict]]()
MODELS_KEY = pytest.StashKey[dict[str, HookedRanker]]()
ITEM_VERDICT_KEY = pytest.StashKey[Verdict]()
ITEM_SETTINGS_KEY = pytest.StashKey[dict[str, Any]]()
IDENTITIES_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()
CONFIG_KEY = pytest.StashKey[Configuration]()
BASELINE_KEY = pytest.StashKey[dict[str, Any] | None]()
RESULT_KEY = pytest.StashKey["RunResult"]()
WORKER_OUTPUT = "irmechtest"
GATE_FAILED = "baseline gate failed"  # the category the final summary line counts a failed gate under


@dataclass
class RunResult:
    """What a finished run leaves for the files and the summary: its fingerprint and the gate's comparisons."""

    fingerprint: dict[str, Any]
    comparisons: list[fingerprint.Comparison] = field(default_factory=list)


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


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _load_configuration(config: pytest.Config) -> Configuration:
    path = config.getoption("irmech_config")
    if path:
        return load_configuration(Path(path), required=True)
    return load_configuration(config.rootpath / "pyproject.toml", required=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "irmech_property(name, applies_to=('cross-encoder', 'bi-encoder'), layouts=None): a built-in mechanistic "
        "property; on other ranker kinds, or hook layouts other than those given (ranker.layout), it is skipped "
        "and reported as not applicable",
    )
    config.stash[VERDICTS_KEY] = []
    config.stash[MODELS_KEY] = {}
    config.stash[IDENTITIES_KEY] = {}
    baseline = config.getoption("irmech_baseline")
    try:
        config.stash[CONFIG_KEY] = _load_configuration(config)
        load_baseline = baseline and not _is_worker(config)
        config.stash[BASELINE_KEY] = fingerprint.load(Path(baseline)) if load_baseline else None
    except (ConfigError, fingerprint.FingerprintError) as error:
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
    models = request.config.stash[MODELS_KEY]
    if spec not in models:
        models[spec] = load_ranker(spec, device=request.config.getoption("irmech_device"))
        request.config.stash[IDENTITIES_KEY][models[spec].name] = jsonable(models[spec].identity)
    return models[spec]


def profile(config: pytest.Config) -> str:
    """The settings profile of the run: ``--irmech-profile``, else the configuration's."""
    return config.getoption("irmech_profile") or config.stash[CONFIG_KEY].profile


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
    settings = request.config.stash[CONFIG_KEY].settings(marker.args[0], keys, profile(request.config))
    request.node.stash[ITEM_SETTINGS_KEY] = settings
    return settings


@pytest.fixture(autouse=True)
def _irmech_applicability(request: pytest.FixtureRequest) -> None:
    """Skip a property on ranker kinds it does not apply to, and count it as not applicable."""
    marker = _property_marker(request.node)
    if marker is None or "ranker" not in request.fixturenames:
        return
    model = request.getfixturevalue("ranker")
    kinds = marker.kwargs.get("applies_to", ALL_KINDS)
    layouts = marker.kwargs.get("layouts")
    reason = None
    if model.kind not in kinds:
        reason = f"{model.kind}: " + (marker.kwargs.get("reason") or f"applies to {', '.join(kinds)} only")
    elif layouts is not None and model.layout not in layouts:
        reason = (
            f"{model.layout}: the property reads one stack of blocks.{{l}} (patching, attention maps, neurons), "
            "which this hook layout does not have (docs/circuits.md)"
        )
    if reason is not None:
        verdict = Verdict.not_applicable(marker.args[0], model.name, reason)
        _record(request, verdict)
        pytest.skip(verdict.message())


def _record(request: pytest.FixtureRequest, verdict: Verdict) -> None:
    """Keep the verdict for the run, with the settings it was measured under (they join the fingerprint)."""
    settings = request.node.stash.get(ITEM_SETTINGS_KEY, None)
    if settings is not None:
        verdict.details.setdefault("settings", settings)
    request.config.stash[VERDICTS_KEY].append(verdict)
    request.node.stash[ITEM_VERDICT_KEY] = verdict


@pytest.fixture
def irmech_verdict(request: pytest.FixtureRequest, record_property: Callable) -> Callable[[Verdict], Verdict]:
    """Record a verdict (report, JSON, JUnit properties) and pass, fail or skip the test by it."""

    def check(verdict: Verdict) -> Verdict:
        _record(request, verdict)
        record_property("irmech_property", verdict.property)
        record_property("irmech_model", verdict.model)
        record_property("irmech_value", verdict.value)
        record_property("irmech_threshold", verdict.threshold)
        if verdict.outcome is Outcome.NOT_APPLICABLE:
            pytest.skip(verdict.message())
        if verdict.outcome is not Outcome.PASSED:
            pytest.fail(verdict.message(), pytrace=False)
        return verdict

    return check


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    """A property test that raised before reaching a verdict shows in the report as an error, or as failed
    when the model's score did not respond to the probe's edits (``patching.NoEffectError``)."""
    report = yield
    marker = _property_marker(item)
    if marker is not None and report.failed and ITEM_VERDICT_KEY not in item.stash:
        model = item.funcargs.get("ranker") if hasattr(item, "funcargs") else None
        name = model.name if model is not None else getattr(getattr(item, "callspec", None), "id", item.name)
        message = str(call.excinfo.value) if call.excinfo is not None else report.longreprtext
        # A model whose score the probe's edits do not move fails the property: nothing to attribute.
        no_effect = call.excinfo is not None and isinstance(call.excinfo.value, NoEffectError)
        outcome = Outcome.FAILED if no_effect else Outcome.ERROR
        verdict = Verdict(marker.args[0], name, None, None, reason=message[:2000], outcome=outcome)
        item.config.stash[VERDICTS_KEY].append(verdict)
        item.stash[ITEM_VERDICT_KEY] = verdict
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a finished worker's verdicts and model identities."""
    data = json.loads(getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, "{}"))
    node.config.stash[VERDICTS_KEY].extend(Verdict.from_dict(v) for v in data.get("verdicts", []))
    node.config.stash[IDENTITIES_KEY].update(data.get("identities", {}))


def _conclude(config: pytest.Config) -> RunResult:
    """Sort the verdicts, build the fingerprint and run the gate, once per run."""
    if RESULT_KEY not in config.stash:
        # Through JSON and back, as an xdist worker's verdicts come, so serial and xdist runs render alike.
        verdicts = config.stash[VERDICTS_KEY]
        verdicts[:] = sorted(
            (Verdict.from_dict(jsonable(v.to_dict())) for v in verdicts), key=lambda v: (v.model, v.property)
        )
        result = RunResult(fingerprint.build(verdicts, config.stash[IDENTITIES_KEY], profile(config)))
        baseline = config.stash[BASELINE_KEY]
        if baseline is not None and verdicts:
            result.comparisons = fingerprint.compare(baseline, result.fingerprint)
        config.stash[RESULT_KEY] = result
    return config.stash[RESULT_KEY]


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    """The release gate: after every test (and every xdist worker) is done, drift counts as a failure."""
    outcome = yield
    if not _is_worker(session.config) and fingerprint.failed(_conclude(session.config).comparisons):
        session.testsfailed += 1
    return outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config):
        identities = config.stash[IDENTITIES_KEY]
        verdicts = [jsonable(v.to_dict()) for v in config.stash[VERDICTS_KEY]]
        config.workeroutput[WORKER_OUTPUT] = json.dumps({"verdicts": verdicts, "identities": identities})
        return
    result = _conclude(config)
    verdicts = config.stash[VERDICTS_KEY]
    json_path = config.getoption("irmech_json", None)
    if json_path:
        data = {"verdicts": [jsonable(v.to_dict()) for v in verdicts]}
        Path(json_path).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    save_path = config.getoption("irmech_save_baseline", None)
    if save_path and verdicts:
        fingerprint.save(Path(save_path), result.fingerprint)
    report_path = config.getoption("irmech_report", None)
    if report_path:
        from irmechtest.report import write_html

        write_html(
            Path(report_path),
            verdicts,
            fingerprint=result.fingerprint,
            comparisons=result.comparisons,
            baseline=config.getoption("irmech_baseline") or "",
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    verdicts = config.stash.get(VERDICTS_KEY, [])
    if not verdicts or _is_worker(config):
        return
    terminalreporter.section("irmechtest verdicts")
    width = max(len(v.property) for v in verdicts)
    for v in verdicts:
        value = "" if v.value is None else f"{v.value:.4g} (needs {v.comparison} {v.threshold:.4g})"
        if note := v.qualifier():
            value += f", {note}"
        terminalreporter.write_line(f"{v.outcome.value:>14}  {v.property:<{width}}  {v.model}  {value}")
    comparisons = _conclude(config).comparisons
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
    for option, what in (("irmech_report", "HTML report"), ("irmech_save_baseline", "baseline saved")):
        path = config.getoption(option, None)
        if path:
            terminalreporter.write_line(f"{what}: {Path(path).resolve()}")
