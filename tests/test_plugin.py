"""The pytest plugin end to end, run in-process with pytester."""

import json
import re

import pytest

from irmechtest.plugin import suite_dir


def test_suite_passes_on_the_embedded_model(pytester):
    report = pytester.path / "report.html"
    result = pytester.runpytest_subprocess(
        "--model=all-MiniLM-L6-v2",
        "-k",
        "test_idf_lives_in_u0 or test_tfc1_holds",
        f"--irmech-report={report}",
        f"--irmech-json={pytester.path / 'v.json'}",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*irmechtest verdicts*", "*passed*idf-in-u0*all-MiniLM-L6-v2*"])
    html = report.read_text(encoding="utf-8")
    assert 'id="matrix"' in html and "idf-in-u0" in html and "tfc1" in html
    verdicts = json.loads((pytester.path / "v.json").read_text())["verdicts"]
    assert {v["property"] for v in verdicts} == {"idf-in-u0", "tfc1"}
    assert all(v["outcome"] == "passed" for v in verdicts)


MECHANISTIC = {
    "matching-heads",
    "scoring-heads",
    "contextualisation-heads",
    "tfc1-stmc1-maps",
    "circuit-fit",
    "idf-in-u0",
    "idf-in-u0-causal",
    "nig-pruning",
}


@pytest.mark.parametrize(
    "model, profile, outcome",
    [
        ("irmechtest:planted-bm25", "quick", "passed"),
        ("irmechtest:planted-bm25-random", "quick", "failed"),
        # Paper-scale samples: a probe that passes on 16 pairs by luck fails here (it happened: a planted
        # head's IDF correlation was 0.65 on 16 pairs and 0.44 on 2,000).
        ("irmechtest:planted-bm25", "full", "passed"),
    ],
)
def test_every_mechanistic_property_passes_on_the_planted_model_and_fails_on_its_twin(
    pytester, model, profile, outcome
):
    """The suite's positive and negative controls end to end: the planted circuit is found by every probe, and
    none of them finds it in the random-init twin of the same shape."""
    json_path = pytester.path / "v.json"
    pytester.runpytest_subprocess(f"--model={model}", f"--irmech-profile={profile}", f"--irmech-json={json_path}")
    verdicts = json.loads(json_path.read_text())["verdicts"]
    outcomes = {v["property"]: v["outcome"] for v in verdicts if v["property"] in MECHANISTIC}
    assert outcomes == dict.fromkeys(MECHANISTIC, outcome)


def test_random_init_twin_fails_idf_in_u0(pytester):
    result = pytester.runpytest_subprocess(
        "--model=irmechtest:random-minilm", "-k", "test_idf_lives_in_u0", "--junitxml=j.xml"
    )
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*idf-in-u0: failed: value 0.0*required >= 0.5*"])
    junit = (pytester.path / "j.xml").read_text()
    # pytest's default junit_family, xunit2, allows properties on the test suite only (issue 14).
    assert 'name="irmech[irmechtest:random-minilm][idf-in-u0].value"' in junit
    assert 'name="irmech[irmechtest:random-minilm][idf-in-u0].outcome" value="failed"' in junit


def test_each_model_is_a_parameter_and_loads_once(pytester):
    pytester.makeconftest(
        """
        import irmechtest.plugin as plugin

        LOADED = []
        real_load = plugin.load_ranker

        def counting_load(spec, **kwargs):
            LOADED.append(spec)
            return real_load(spec, **kwargs)

        plugin.load_ranker = counting_load

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"loaded: {sorted(LOADED)}")
        """
    )
    result = pytester.runpytest_subprocess(
        "--model=irmechtest:random-minilm", "--model=irmechtest:random-bert", "-k", "test_idf_lives_in_u0", "-v"
    )
    result.stdout.fnmatch_lines(
        [
            "*test_idf_lives_in_u0?irmechtest:random-minilm?*",
            "*test_idf_lives_in_u0?irmechtest:random-bert?*",
            "loaded: ['irmechtest:random-bert', 'irmechtest:random-minilm']",
        ]
    )


def test_unknown_model_errors_clearly(pytester):
    result = pytester.runpytest_subprocess("--model=irmechtest:nonsense", "-k", "test_idf_lives_in_u0")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown built-in model*"])


def test_property_on_a_kind_it_does_not_apply_to_is_not_applicable(pytester):
    pytester.makepyfile(
        test_cross_only="""
        import pytest

        @pytest.mark.irmech_property("my-cross-only", applies_to=("cross-encoder",), reason="needs a classifier")
        def test_cross_only(ranker, irmech_verdict):
            raise AssertionError("must not run on a bi-encoder")

        @pytest.mark.irmech_property("scoring-heads")
        def test_registered(ranker, irmech_verdict):
            raise AssertionError("the registry says scoring-heads needs a cross-encoder")
        """
    )
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "-rs", "test_cross_only.py")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*not applicable*my-cross-only*", "*not applicable*scoring-heads*"])
    result.stdout.fnmatch_lines(["*my-cross-only: not applicable (bi-encoder: needs a classifier)*"])
    result.stdout.fnmatch_lines(["*scoring-heads: not applicable (bi-encoder: bi-encoders encode query and document*"])


def test_a_registered_property_is_defined_once(pytester):
    """The registry defines a built-in property; a marker that restates (and could contradict) it is refused."""
    pytester.makepyfile(
        test_restated="""
        import pytest

        @pytest.mark.irmech_property("idf-in-u0", applies_to=("cross-encoder",))
        def test_restated(ranker, irmech_verdict):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "test_restated.py")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*defined in irmechtest.registry*takes the name only*applies_to*"])


def test_block_probes_are_not_applicable_to_monot5_and_a_no_effect_model_fails(pytester):
    """monoT5's encoder / decoder stacks are not the blocks.{l} the circuit, map and NIG probes read: they are
    not applicable, with the reason, before anything runs. On a model whose edits do not move the score
    (random-deberta-v2: every TFC1 gap under 1e-4, pair_runs.NoEffectError) the head probes fail with that
    reason, not an error: there is no effect to attribute."""
    out = pytester.path / "v.json"
    suite = [str(suite_dir() / name) for name in ("test_circuits.py", "test_nig.py")]
    result = pytester.runpytest_subprocess("--model=irmechtest:random-t5", *suite, f"--irmech-json={out}")
    result.assert_outcomes(skipped=6)
    verdicts = json.loads(out.read_text())["verdicts"]
    assert {v["property"] for v in verdicts} == MECHANISTIC - {"idf-in-u0", "idf-in-u0-causal"}
    assert all(v["outcome"] == "not applicable" and "blocks.{l}" in v["reason"] for v in verdicts)
    circuits = str(suite_dir() / "test_circuits.py")
    heads = "matching_heads or scoring_heads"
    result = pytester.runpytest_subprocess(
        "--model=irmechtest:random-deberta-v2", circuits, "-k", heads, f"--irmech-json={out}"
    )
    result.assert_outcomes(failed=2)
    verdicts = json.loads(out.read_text())["verdicts"]
    assert {v["property"] for v in verdicts} == {"matching-heads", "scoring-heads"}
    assert all(v["outcome"] == "failed" and "score gap" in v["reason"] for v in verdicts)


def test_explicit_test_paths_are_kept_with_model(pytester):
    pytester.makepyfile(test_mine="def test_mine(ranker):\n    assert ranker.kind == 'bi-encoder'\n")
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "test_mine.py")
    result.assert_outcomes(passed=1)


def test_suite_is_found_from_the_installed_package():
    assert (suite_dir() / "test_idf_u0.py").is_file()


# Cheap settings for the runs below: few TFC1 pairs, and a U0 threshold the random twin passes.
CHEAP_CONFIG = """
[tool.irmechtest.properties.tfc1]
n_pairs = 12

[tool.irmechtest.models."irmechtest:random-minilm".properties.idf-in-u0]
threshold = 0.0
"""


def _comparable(text: str) -> str:
    """A report or fingerprint without its time stamp."""
    return re.sub(
        r'<span id="generated">[^<]*</span>|"created": "[^"]*"|&quot;created&quot;: &quot;[^&]*&quot;', "", text
    )


def test_several_models_under_xdist_give_the_serial_report(pytester):
    pytester.makepyprojecttoml(CHEAP_CONFIG)
    outputs = {}
    for name, extra in (("serial", []), ("xdist", ["-n", "2"])):
        result = pytester.runpytest_subprocess(
            "--model=irmechtest:random-minilm",
            "--model=irmechtest:random-bert",
            "-k",
            "test_idf_lives_in_u0 or test_tfc1_holds",
            *extra,
            f"--irmech-json={name}.json",
            f"--irmech-report={name}.html",
            f"--irmech-save-baseline={name}-fp.json",
        )
        result.assert_outcomes(passed=2, failed=2)  # random-bert keeps the default thresholds
        outputs[name] = [
            _comparable((pytester.path / f"{name}{ext}").read_text()) for ext in (".json", ".html", "-fp.json")
        ]
    assert outputs["xdist"] == outputs["serial"]
    verdicts = json.loads(outputs["serial"][0])["verdicts"]
    assert [(v["model"], v["property"]) for v in verdicts] == [
        ("irmechtest:random-bert", "idf-in-u0"),
        ("irmechtest:random-bert", "tfc1"),
        ("irmechtest:random-minilm", "idf-in-u0"),
        ("irmechtest:random-minilm", "tfc1"),
    ]
    settings = {(v["model"], v["property"]): v["details"]["settings"] for v in verdicts}
    assert settings["irmechtest:random-bert", "tfc1"]["n_pairs"] == 12
    assert settings["irmechtest:random-minilm", "idf-in-u0"]["threshold"] == 0.0
    assert settings["irmechtest:random-bert", "idf-in-u0"]["threshold"] == 0.5


def test_baseline_gate_fails_on_drift_with_a_diff_and_passes_on_its_own_fingerprint(pytester):
    from irmechtest.report import fingerprint
    from irmechtest.report.verdicts import Verdict

    pytester.makepyprojecttoml(CHEAP_CONFIG)
    released = Verdict("idf-in-u0", "released-model", 0.9, 0.0, details={"components": ["0.0", "1.3"]})
    fingerprint.save(pytester.path / "release.json", fingerprint.build([released], {}, "quick"))
    args = ["--model=irmechtest:random-minilm", "-k", "test_idf_lives_in_u0", "--irmech-report=r.html"]
    result = pytester.runpytest_subprocess(*args, "--irmech-baseline=release.json", "--irmech-save-baseline=new.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*irmechtest baseline gate*",
            "baseline gate FAILED: 2 drift(s) from release.json",
            "[[]irmechtest:random-minilm[]] (against baseline model released-model)",
            "  - idf-in-u0: value 0.9 -> 0.0068* (-0.893; tolerance 0.05)",
            "  - idf-in-u0: lost components 0.0, 1.3 (baseline ['0.0', '1.3'])",
        ]
    )
    assert "baseline gate FAILED" in (pytester.path / "r.html").read_text()
    result.stdout.fnmatch_lines(["=* 1 passed, * 1 baseline gate failed in *"])
    result = pytester.runpytest_subprocess(*args, "--irmech-baseline=new.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baseline gate passed against new.json"])


@pytest.mark.parametrize(
    ("files", "option", "message"),
    [
        (
            {"pyproject.toml": "[tool.irmechtest.properties.tfc1]\nn_pairs = -3\n"},
            "-k=idf",
            "ERROR: */pyproject.toml: [[]tool.irmechtest.properties.tfc1[]]: n_pairs must be at least 1, got -3",
        ),
        (
            {"base.json": '{"schema": "irmechtest-fingerprint", "schema_version": 0, "models": {}}'},
            "--irmech-baseline=base.json",
            "ERROR: base.json: fingerprint schema version 0; this irmechtest reads version 1*",
        ),
    ],
)
def test_malformed_config_and_baseline_are_usage_errors(pytester, files, option, message):
    for name, text in files.items():
        (pytester.path / name).write_text(text)
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
