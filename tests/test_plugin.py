"""The pytest plugin end to end, run in-process with pytester."""

import json

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


def test_random_init_twin_fails_idf_in_u0(pytester):
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "-k", "idf", "--junitxml=j.xml")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*idf-in-u0: failed: value 0.0*required >= 0.5*"])
    junit = (pytester.path / "j.xml").read_text()
    assert 'name="irmech_value"' in junit and 'name="irmech_property" value="idf-in-u0"' in junit


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
        "--model=irmechtest:random-minilm", "--model=irmechtest:random-bert", "-k", "idf", "-v"
    )
    result.stdout.fnmatch_lines(
        [
            "*test_idf_lives_in_u0?irmechtest:random-minilm?*",
            "*test_idf_lives_in_u0?irmechtest:random-bert?*",
            "loaded: ['irmechtest:random-bert', 'irmechtest:random-minilm']",
        ]
    )


def test_unknown_model_errors_clearly(pytester):
    result = pytester.runpytest_subprocess("--model=irmechtest:nonsense", "-k", "idf")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown built-in model*"])


def test_property_on_a_kind_it_does_not_apply_to_is_not_applicable(pytester):
    pytester.makepyfile(
        test_cross_only="""
        import pytest

        @pytest.mark.irmech_property("idf-in-u0", applies_to=("cross-encoder",), reason="needs a classifier")
        def test_cross_only(ranker, irmech_verdict):
            raise AssertionError("must not run on a bi-encoder")
        """
    )
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "test_cross_only.py")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not applicable*idf-in-u0*"])


def test_explicit_test_paths_are_kept_with_model(pytester):
    pytester.makepyfile(test_mine="def test_mine(ranker):\n    assert ranker.kind == 'bi-encoder'\n")
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "test_mine.py")
    result.assert_outcomes(passed=1)


def test_suite_is_found_from_the_installed_package():
    assert (suite_dir() / "test_idf_u0.py").is_file()
