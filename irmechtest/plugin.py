"""The pytest plugin: ``pytest --model=SPEC`` runs the built-in suite on each model and reports verdicts.

Registered through the ``pytest11`` entry point. What it adds:

* options ``--model`` (repeatable), ``--device``, ``--irmech-report`` and ``--irmech-json``;
* when ``--model`` is given and no test paths are, the built-in suite (``axioms/``, installed as
  ``irmechtest.suite``) is what gets collected, so the command works from any directory;
* the session-scoped ``ranker`` fixture, parametrised per model (each model is loaded once);
* the ``irmech_property`` marker (property name and the ranker kinds it applies to) and the
  ``irmech_verdict`` / ``irmech_settings`` fixtures that suite tests use;
* a terminal summary table and, on request, a self-contained HTML report and a JSON file of verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from irmechtest.config import property_config
from irmechtest.loading import DEFAULT_MODEL, load_ranker
from irmechtest.models import HookedRanker
from irmechtest.verdicts import Outcome, Verdict

ALL_KINDS = ("cross-encoder", "bi-encoder")
VERDICTS_KEY = pytest.StashKey[list[Verdict]]()
MODELS_KEY = pytest.StashKey[dict[str, HookedRanker]]()
ITEM_VERDICT_KEY = pytest.StashKey[Verdict]()


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
    group.addoption("--irmech-report", dest="irmech_report", metavar="PATH", help="write the HTML report here")
    group.addoption("--irmech-json", dest="irmech_json", metavar="PATH", help="write the verdicts as JSON here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "irmech_property(name, applies_to=('cross-encoder', 'bi-encoder')): a built-in mechanistic property; "
        "on other ranker kinds it is skipped and reported as not applicable",
    )
    config.stash[VERDICTS_KEY] = []
    config.stash[MODELS_KEY] = {}
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
    return models[spec]


def _property_marker(node: pytest.Item) -> pytest.Mark | None:
    return node.get_closest_marker("irmech_property")


@pytest.fixture
def irmech_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of the property the test is marked with (defaults from ``irmechtest.config``)."""
    marker = _property_marker(request.node)
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses irmech_settings without an irmech_property marker")
    return property_config(marker.args[0])


@pytest.fixture(autouse=True)
def _irmech_applicability(request: pytest.FixtureRequest) -> None:
    """Skip a property on ranker kinds it does not apply to, and count it as not applicable."""
    marker = _property_marker(request.node)
    if marker is None or "ranker" not in request.fixturenames:
        return
    model = request.getfixturevalue("ranker")
    kinds = marker.kwargs.get("applies_to", ALL_KINDS)
    if model.kind not in kinds:
        reason = marker.kwargs.get("reason") or f"applies to {', '.join(kinds)} only"
        verdict = Verdict.not_applicable(marker.args[0], model.name, f"{model.kind}: {reason}")
        _record(request, verdict)
        pytest.skip(verdict.message())


def _record(request: pytest.FixtureRequest, verdict: Verdict) -> None:
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
    """A property test that raised before reaching a verdict shows in the report as an error."""
    report = yield
    marker = _property_marker(item)
    if marker is not None and report.failed and ITEM_VERDICT_KEY not in item.stash:
        model = item.funcargs.get("ranker") if hasattr(item, "funcargs") else None
        name = model.name if model is not None else getattr(getattr(item, "callspec", None), "id", item.name)
        message = str(call.excinfo.value) if call.excinfo is not None else report.longreprtext
        verdict = Verdict(marker.args[0], name, None, None, reason=message[:2000], outcome=Outcome.ERROR)
        item.config.stash[VERDICTS_KEY].append(verdict)
        item.stash[ITEM_VERDICT_KEY] = verdict
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    verdicts = config.stash.get(VERDICTS_KEY, [])
    json_path = config.getoption("irmech_json", None)
    if json_path:
        Path(json_path).write_text(
            json.dumps({"verdicts": [v.to_dict() for v in verdicts]}, indent=2, default=str), encoding="utf-8"
        )
    report_path = config.getoption("irmech_report", None)
    if report_path:
        from irmechtest.report import write_html

        write_html(Path(report_path), verdicts)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    verdicts = config.stash.get(VERDICTS_KEY, [])
    if not verdicts:
        return
    terminalreporter.section("irmechtest verdicts")
    width = max(len(v.property) for v in verdicts)
    for v in verdicts:
        value = "" if v.value is None else f"{v.value:.4g} (needs {v.comparison} {v.threshold:.4g})"
        terminalreporter.write_line(f"{v.outcome.value:>14}  {v.property:<{width}}  {v.model}  {value}")
    report_path = config.getoption("irmech_report", None)
    if report_path:
        terminalreporter.write_line(f"HTML report: {Path(report_path).resolve()}")
