"""Shared fixtures of irmechtest's own tests: models are built once per session (they are read-only)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm():
    from irmechtest.loading import load_ranker

    return load_ranker("minilm")


@pytest.fixture(scope="session")
def tokenizer():
    from irmechtest.controls.twins import embedded_tokenizer

    return embedded_tokenizer()


@pytest.fixture
def report_verdicts():
    """Verdicts with every kind of evidence, one of them carrying a document with markup in it."""
    from irmechtest.report.verdicts import Evidence, Verdict

    heatmap = Evidence(
        "heatmap",
        "patching effect per layer x head",
        {"data": [[0.1, -0.4, 0.0], [0.9, 0.2, float("nan")]], "row_labels": ["L0", "L1"], "col_labels": [0, 1, 2]},
    )
    scatter = Evidence("scatter", "U0 against IDF", {"x": [1.0, 2.0, 3.0], "y": [0.2, 0.1, -0.3], "x_label": "IDF"})
    hostile = "<script>window.irmechPwned = true; console.error('executed')</script><b>bold?</b>"
    examples = Evidence("examples", "shrunk counterexample", {"examples": [{"query": "q & a", "perturbed": hostile}]})
    table = Evidence("table", "compliance", {"columns": ["pos", "neg"], "rows": [[3, 1]]})
    return [
        Verdict("circuit-heads", "org/<model>", 0.8, 0.5, details={"components": ["1.0"]}, evidence=[heatmap]),
        Verdict("idf-in-u0", "org/<model>", 0.76, 0.5, evidence=[scatter]),
        Verdict("tfc1", "org/<model>", 0.6, 0.9, details={"ci_low": 0.5, "ci_high": 0.7}, evidence=[table, examples]),
        Verdict.not_applicable("tfc1", "random", "bi-encoder: needs a classifier"),
    ]


@pytest.fixture(scope="session")
def planted():
    """The planted-circuit cross-encoder as a hooked ranker (``.truth`` holds its answer key)."""
    from irmechtest.controls.twins import planted_ranker

    return planted_ranker()


@pytest.fixture(scope="session")
def twin():
    """The planted model's random-init twin: same shape and tokenizer, no circuit."""
    from irmechtest.controls.twins import planted_ranker

    return planted_ranker(random=True)


ZOO_DIR = Path(os.environ.get("IRMECHTEST_ZOO", Path(__file__).resolve().parents[2] / "shared" / "models"))


@pytest.fixture(scope="session")
def zoo():
    """``zoo(name)``: the path of a validation-zoo checkpoint (``../shared/models``, or ``$IRMECHTEST_ZOO``);
    the test is skipped with the reason when the zoo is not beside the checkout (a fresh clone elsewhere)."""

    def path(name: str) -> Path:
        folder = ZOO_DIR / name
        if not (folder / "config.json").exists():
            pytest.skip(f"validation zoo model {folder} is absent (the zoo lives in ../shared/models)")
        return folder

    return path
