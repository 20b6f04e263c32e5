"""Issue 14: a release gate a team can trust in CI. Each numbered case of the issue, reproduced end to end in a
pytest subprocess: nothing clobbered or half-written, every input checked at start-up (exit 4), a model that
cannot load told apart from a regression (exit 6), and the README's release workflow run step by step."""

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import torch

# Property tests that need no model: four TFC1 verdicts and one IDF verdict, written in a second. With
# IRMECH_FAKE_VALUE the second TFC1 verdict fails; with IRMECH_FAKE_PAIRS it rests on that many pairs (the
# minimum for 0.9 is 36); with IRMECH_FAKE_WAIT the last test waits to be interrupted.
FAKE_SUITE = """
import os, pathlib, time

import pytest
import torch

from irmechtest.report.verdicts import Verdict, min_pairs


@pytest.mark.parametrize("i", range(4))
@pytest.mark.irmech_property("tfc1")
def test_rate(i, irmech_verdict):
    value = float(os.environ.get("IRMECH_FAKE_VALUE", "0.95")) if i == 1 else 0.95
    pairs = int(os.environ.get("IRMECH_FAKE_PAIRS", "200")) if i == 1 else 200
    sample = {"applicable pairs": pairs}
    irmech_verdict(Verdict("tfc1", f"model-{i}", value, 0.9, sample=sample, min_sample=min_pairs(0.9)))


@pytest.mark.irmech_property("idf-in-u0")
def test_zz_last(irmech_verdict):
    if os.environ.get("IRMECH_FAKE_WAIT"):
        pathlib.Path("started").write_text("")
        time.sleep(300)
    irmech_verdict(Verdict("idf-in-u0", "model-0", 0.8, 0.5))
"""

OUTPUTS = ["--irmech-json=out/v.json", "--irmech-report=out/r.html", "--irmech-save-baseline=out/b.json"]


def run(pytester, *args, env=None):
    """pytest in a subprocess of its own, as CI runs it (returns the completed process, stdout and stderr merged)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(pytester):
    return {p.name: p.read_bytes() for p in sorted((pytester.path / "out").iterdir())}


def test_complete_outputs_survive_sigint_and_x_byte_for_byte(pytester):
    """Cases 1, 4 and 10 (JUnit): a complete run writes every output (creating the missing folder) and valid
    xunit2; an interrupted run and an ``-x`` run leave them as they were and write marked partial files beside."""
    pytester.makepyfile(test_fake=FAKE_SUITE)
    complete = run(pytester, "test_fake.py", *OUTPUTS, "--junitxml=j.xml")
    assert complete.returncode == 0, complete.stdout
    assert "record_property is incompatible" not in complete.stdout and "warning" not in complete.stdout
    assert "baseline saved:" in complete.stdout
    before = snapshot(pytester)
    assert sorted(before) == ["b.json", "r.html", "v.json"]
    assert json.loads(before["v.json"])["complete"] is True
    suite = ET.parse(pytester.path / "j.xml").getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["irmech[model-1][tfc1].value"] == "0.95" and properties["irmech[model-0][idf-in-u0].outcome"]
    assert all(case.find("properties") is None for case in suite.iter("testcase"))  # xunit2 forbids them

    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_fake.py", *OUTPUTS],
        cwd=pytester.path,
        env={**os.environ, "IRMECH_FAKE_WAIT": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (pytester.path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # how GitHub Actions cancels a job
    interrupted, _ = process.communicate(timeout=120)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, interrupted
    after = snapshot(pytester)
    assert {name: after[name] for name in before} == before
    partial = json.loads(after["v.partial.json"])
    assert (partial["complete"], partial["incomplete"], len(partial["verdicts"])) == (False, "interrupted", 4)
    assert "PARTIAL REPORT: the run did not complete (interrupted)" in after["r.partial.html"].decode()
    assert "b.partial.json" not in after and "baseline saved:" not in interrupted
    assert "baseline NOT saved to out/b.json: the run is incomplete (interrupted)" in interrupted

    (pytester.path / "out" / "v.partial.json").unlink()
    stopped = run(pytester, "test_fake.py", *OUTPUTS, "-x", env={"IRMECH_FAKE_VALUE": "0.5"})
    assert stopped.returncode == pytest.ExitCode.TESTS_FAILED
    after = snapshot(pytester)
    assert {name: after[name] for name in before} == before
    partial = json.loads(after["v.partial.json"])
    assert partial["incomplete"] == "stopped early (stopping after 1 failures)" and len(partial["verdicts"]) == 2
    assert "baseline saved:" not in stopped.stdout and "baseline NOT saved" in stopped.stdout


MODEL = "--model=irmechtest:random-bert"


def _python(code: str, *args: object) -> None:
    """Build a checkpoint in a process of its own: pytester drops the modules a test imported when it ends, and
    torch does not survive their re-import (docs/architecture.md, subprocess pytester runs)."""
    subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, timeout=300)


CHECKPOINT_WITHOUT_TOKENIZER = """
import sys
from irmechtest.controls.twins import tiny_config
from irmechtest.models.huggingface import random_hf_model

random_hf_model(tiny_config("bert", 1), seed=1).save_pretrained(sys.argv[1])
"""


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        # Case 2: a baseline property without settings crashed the comparison after the whole run.
        (
            {
                "base.json": '{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {"m": {"identity": '
                '{}, "properties": {"tfc1": {"outcome": "passed", "value": 0.9, "comparison": ">=", "measured": {}}}}}}'
            },
            [MODEL, "--irmech-baseline=base.json"],
            "ERROR: base.json: models['m'].properties['tfc1']: missing key 'settings'",
        ),
        # Case 3: a checkpoint folder without tokenizer files loaded with a tokenizer mapping every word to [UNK].
        ({}, ["--model=ckpt"], "ERROR: ckpt has no tokenizer files (one of tokenizer.json, vocab.txt, *"),
        # Case 4: an output path naming a directory failed after the run, losing the other outputs.
        (
            {"out/keep": ""},
            [MODEL, "--irmech-report=out"],
            "ERROR: --irmech-report=out: is a directory; give a file name*",
        ),
        (
            {"out": "a file"},
            [MODEL, "--irmech-json=out/v.json"],
            "ERROR: --irmech-json=out/v.json: */out is a file, not a folder",
        ),
        (
            {},
            [MODEL, "--irmech-json=same.json", "--irmech-save-baseline=same.json"],
            "ERROR: --irmech-save-baseline=same.json: the same file as --irmech-json=same.json",
        ),
        # Case 6: a per-model table matching no --model was ignored.
        (
            {"pyproject.toml": '[tool.irmechtest.models."irmechtest:random-bret".properties.tfc1]\nthreshold = 0.5\n'},
            [MODEL],
            'ERROR: */pyproject.toml: [[]tool.irmechtest.models."irmechtest:random-bret"[]] matches no --model of '
            "this run (models: irmechtest:random-bert); did you mean 'irmechtest:random-bert'?",
        ),
        # Case 8: --device cuda without CUDA failed in every test.
        ({}, [MODEL, "--device=cuda"], "ERROR: --device=cuda: CUDA is not available here (torch *"),
        ({}, [MODEL, "--device=tpu"], "ERROR: --device=tpu: *"),
        # Case 10: the same model twice ran everything twice; a newer baseline asked to be saved again.
        ({}, [MODEL, MODEL], "ERROR: --model: irmechtest:random-bert is given more than once*"),
        (
            {"base.json": '{"schema": "irmechtest-fingerprint", "schema_version": 9, "models": {}}'},
            [MODEL, "--irmech-baseline=base.json"],
            "ERROR: base.json: fingerprint schema version 9; this irmechtest reads version 1 (it was written by a "
            "newer irmechtest: upgrade irmechtest*",
        ),
        ({}, [MODEL, "--irmech-gate=baseline"], "ERROR: --irmech-gate=baseline needs --irmech-baseline=PATH or *"),
    ],
)
def test_inputs_are_checked_at_start_up_before_any_model_loads(pytester, files, options, message):
    if torch.cuda.is_available() and "--device=cuda" in options:
        pytest.skip("this machine has CUDA")
    for name, text in files.items():
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(text)
    if "--model=ckpt" in options:
        _python(CHECKPOINT_WITHOUT_TOKENIZER, pytester.path / "ckpt")
    result = pytester.runpytest_subprocess(*options, "-k", "test_idf_lives_in_u0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_a_model_that_cannot_load_is_reported_once_under_its_name(pytester):
    """Cases 5 and 8: a model that cannot load gave one copy of its message per test, error verdicts under the
    parametrisation id ("...-LNC1", so the report counted 8 models for one), and exit code 1 like a regression."""
    result = run(
        pytester,
        "--model=nobody/no-such-model",
        "-k",
        "test_axiom_behaviour",
        "--irmech-json=v.json",
        "--irmech-report=r.html",
        "--irmech-save-baseline=b.json",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 6, result.stdout
    assert result.stdout.count("could not get 'nobody/no-such-model'") == 1
    assert "Traceback" not in result.stdout and len(result.stdout.splitlines()) < 60
    verdicts = json.loads((pytester.path / "v.json").read_text())["verdicts"]
    assert len(verdicts) == 7 and {(v["model"], v["outcome"]) for v in verdicts} == {("nobody/no-such-model", "error")}
    assert "7 verdicts on 1 model(s)" in (pytester.path / "r.html").read_text()
    assert not (pytester.path / "b.json").exists() and "baseline NOT saved to b.json" in result.stdout


# The probes take text from the corpus a model declares (real MS MARCO text is mostly [UNK] for the planted
# model). A checkpoint saved to disk loses the declaration, so this project conftest declares the planted corpus
# (words, IDF and synonyms; no answer key) for every loaded model, as a user would for a model of their own.
VOCABULARY_CONFTEST = """
import irmechtest.plugin as plugin
from irmechtest.controls.planted_vocabulary import probe_corpus

real_load = plugin.load_ranker


def load_with_vocabulary(spec, **kwargs):
    ranker = real_load(spec, **kwargs)
    ranker.probe_corpus = probe_corpus()
    return ranker


plugin.load_ranker = load_with_vocabulary
"""


# The planted model as an ordinary checkpoint; with "ablate" its matching heads zero-ablated in W_O.
SAVE_PLANTED = """
import sys

import torch

from irmechtest.controls.planted import build_planted_model

path, ablate = sys.argv[1], sys.argv[2] == "ablate"
planted = build_planted_model(0)
model = planted.model
width = model.config.hidden_size // model.config.num_attention_heads
with torch.no_grad():
    for layer, head in planted.truth.matching_heads if ablate else ():
        model.bert.encoder.layer[layer].attention.output.dense.weight[:, head * width : (head + 1) * width] = 0
model.save_pretrained(path)
planted.tokenizer.save_pretrained(path)
"""


def test_readme_release_workflow(pytester):
    """Case 9, the README's workflow step by step: a release saves its baseline despite measured failures, an
    unchanged candidate passes the gate, one with its matching heads ablated fails it, and the report is there
    to upload after every step."""
    pytester.makeconftest(VOCABULARY_CONFTEST)
    # The planted model passes these three properties; a release with a measured failure (MiniLM has three by
    # design) is made by asking idf-in-u0 for |r| >= 1, which no measured correlation reaches.
    pytester.makepyprojecttoml("[tool.irmechtest.properties.idf-in-u0]\nthreshold = 1.0\n")
    release, ablated = pytester.path / "release", pytester.path / "ablated"
    _python(SAVE_PLANTED, release, "keep")
    _python(SAVE_PLANTED, ablated, "ablate")
    selection = ["-k", "test_matching_heads or test_tfc1_holds or test_idf_lives_in_u0"]
    outputs = ["--irmech-gate=baseline", "--irmech-report=irmech-report.html", "--irmech-json=irmech.json"]

    saved = run(pytester, f"--model={release}", *selection, *outputs, "--irmech-save-baseline=irmech-baseline.json")
    verdicts = json.loads((pytester.path / "irmech.json").read_text())["verdicts"]
    outcomes = {v["property"]: v["outcome"] for v in verdicts}
    assert outcomes == {"idf-in-u0": "failed", "matching-heads": "passed", "tfc1": "passed"}
    assert saved.returncode == 0, saved.stdout
    assert (pytester.path / "irmech-baseline.json").is_file() and (pytester.path / "irmech-report.html").is_file()

    compare = [*selection, *outputs, "--irmech-baseline=irmech-baseline.json", "--junitxml=irmech.xml"]
    unchanged = run(pytester, f"--model={release}", *compare)
    assert unchanged.returncode == 0, unchanged.stdout
    assert "baseline gate passed against irmech-baseline.json" in unchanged.stdout

    (pytester.path / "irmech-report.html").unlink()
    candidate = run(pytester, f"--model={ablated}", *compare)
    assert candidate.returncode == pytest.ExitCode.TESTS_FAILED, candidate.stdout
    # Zeroing them removes the planted model's only query-term route: the TFC1 effect vanishes (so the
    # matching-heads search has nothing to normalise by and raises), and the gate names the ablated heads.
    assert "  - matching-heads: lost components 0.1, 0.3, 1.2 (baseline ['0.1', '0.3', '1.2'])" in candidate.stdout
    assert "  - tfc1: outcome passed -> failed" in candidate.stdout
    assert (pytester.path / "irmech-report.html").is_file() and (pytester.path / "irmech.xml").is_file()


def test_gate_mode_exits_on_drift_and_required_properties_only(pytester):
    """``--irmech-gate=baseline``: a measured failure alone exits 0; a failed property listed in ``required``
    exits 1; a run that did not produce every verdict exits 7 (nothing complete to gate on)."""
    pytester.makepyfile(test_fake=FAKE_SUITE)
    failing = {"IRMECH_FAKE_VALUE": "0.5"}
    gate = ["test_fake.py", "--irmech-gate=baseline"]
    saved = run(pytester, *gate, "--irmech-save-baseline=b.json", env=failing)
    assert saved.returncode == 0 and "1 measured failure(s) are findings, not regressions" in saved.stdout
    assert run(pytester, *gate, "--irmech-baseline=b.json", env=failing).returncode == 0
    pytester.makepyprojecttoml('[tool.irmechtest]\nrequired = ["tfc1"]\n')
    required = run(pytester, *gate, "--irmech-baseline=b.json", env=failing)
    assert required.returncode == 1 and "required property not passed: [model-1] tfc1: failed" in required.stdout
    stopped = run(pytester, *gate, "--irmech-baseline=b.json", "-x", env=failing)
    assert stopped.returncode == 7 and "run incomplete: stopped early" in stopped.stdout


def test_an_inconclusive_verdict_flows_to_every_output_and_the_gate_as_not_established(pytester):
    """A verdict on fewer pairs than its test needs is a skip with its reason (not a pass, not a failure): so in
    the terminal table, JSON, fingerprint, HTML and JUnit; the gate reports baseline pass -> inconclusive, and in
    gate mode it, or a required property that is inconclusive, leaves the run not established (exit 7)."""
    pytester.makepyfile(test_fake=FAKE_SUITE)
    assert run(pytester, "test_fake.py", "--irmech-save-baseline=b.json").returncode == 0
    few = {"IRMECH_FAKE_PAIRS": "35"}
    outputs = ["--irmech-json=v.json", "--irmech-report=r.html", "--junitxml=j.xml", "-o", "junit_family=xunit1"]
    default = run(pytester, "test_fake.py", "--irmech-baseline=b.json", *outputs, "-rs", env=few)
    assert default.returncode == 0 and "4 passed, 1 skipped" in default.stdout  # reported, not a failure
    [row] = [line for line in default.stdout.splitlines() if "model-1" in line and "needs >= 0.9" in line]
    assert row.split()[:3] == ["inconclusive", "tfc1", "model-1"] and "too few: 35 applicable pairs < 36" in row
    assert "rests on 35 applicable pairs; a 95 % verdict needs at least 36" in default.stdout  # the skip's reason
    assert "  ? tfc1: outcome passed -> inconclusive (35 applicable pairs, needs 36): no longer established" in (
        default.stdout
    )
    [verdict] = [v for v in json.loads((pytester.path / "v.json").read_text())["verdicts"] if v["model"] == "model-1"]
    assert verdict["outcome"] == "inconclusive" and verdict["sample"] == {"applicable pairs": 35}
    assert ">inconclusive</a>" in (pytester.path / "r.html").read_text()
    case = next(c for c in ET.parse(pytester.path / "j.xml").iter("testcase") if c.get("name") == "test_rate[1]")
    assert case.find("skipped") is not None
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["irmech_outcome"] == "inconclusive"
    gate = run(pytester, "test_fake.py", "--irmech-gate=baseline", "--irmech-baseline=b.json", env=few)
    assert gate.returncode == 7 and "now inconclusive (the gate section lists them): not established" in gate.stdout
    pytester.makepyprojecttoml('[tool.irmechtest]\nrequired = ["tfc1"]\n')
    fresh = run(pytester, "test_fake.py", "--irmech-gate=baseline", "--irmech-save-baseline=c.json", env=few)
    assert fresh.returncode == 7 and "required property not established: [model-1] tfc1: inconclusive" in fresh.stdout
    enough = run(
        pytester, "test_fake.py", "--irmech-gate=baseline", "--irmech-baseline=b.json", env={"IRMECH_FAKE_PAIRS": "36"}
    )
    assert enough.returncode == 0
