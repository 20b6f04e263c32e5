"""Run the built-in suite on every zoo model (one pytest subprocess each) and compare each verdict with the
expected one that the independent evidence gives (expected.json, written by expected.py).

    python benchmarks/zoo/validate.py                          # every model of expected.json
    python benchmarks/zoo/validate.py --models planted -- -k tfc1   # extra pytest arguments after --
    python benchmarks/zoo/validate.py --reuse                  # the table from verdicts/*.json already there
    python benchmarks/zoo/validate.py --merge -- -k nig        # re-run some properties, keep the other verdicts

Writes ``verdicts/<model>.json`` (irmechtest's --irmech-json) and prints / writes ``verdicts.md`` under
``--out`` (default benchmarks/zoo/): per property and model, "verdict (expected)" and whether they agree.
Every run reads ``held-out.toml`` (written under ``--out``): nig-pruning's lists come from the shared 4,000
judged TREC DL pairs without the zoo's training queries, since pruning evaluated on training queries
measures memorisation (docs/nig.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, HERE, MODELS, REPO, TREC_FILE, zoo_split
from expected import PROPERTIES, write_doc

VERDICT_WORD = {
    "passed": "pass",
    "failed": "fail",
    "inconclusive": "inconclusive",
    "not applicable": "n/a",
    "error": "error",
}
"""irmechtest's outcomes (irmechtest.report.verdicts.Outcome values) in the words of expected.json."""


def held_out_config(out: Path) -> Path:
    """The study's configuration: nig-pruning on lists of queries no zoo model was trained on (docs/nig.md).

    The zoo's models share one train / test split; the shared judged pairs hold its 73 training and 24 test
    queries, so excluding the training ones leaves the test queries for the lists and the attribution pairs.
    Models not trained on TREC DL lose nothing by it (the planted ones read their own vocabulary anyway)."""
    excluded = ", ".join(f'"{q}"' for q in sorted(zoo_split()["train_qids"]))
    path = out / "held-out.toml"
    path.write_text(
        f'[tool.irmechtest.properties.nig-pruning]\npairs = "{DATA_DIR / TREC_FILE}"\nexclude_queries = [{excluded}]\n'
    )
    return path


def run_suite(spec: str, json_path: Path, config: Path, extra: list[str]) -> tuple[int, float]:
    """The suite on one model in its own process (models and torch state never leak between models)."""
    cmd = [sys.executable, "-m", "pytest", f"--model={spec}", f"--irmech-json={json_path}", "-p", "no:cacheprovider"]
    cmd.append(f"--irmech-config={config}")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1")
    start = time.time()
    done = subprocess.run([*cmd, "-q", *extra], cwd=REPO, env=env, capture_output=True, text=True)
    if not json_path.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"pytest on {spec} wrote no verdicts (exit {done.returncode}): {' / '.join(tail)}")
    return done.returncode, time.time() - start


def compare(outcome: str | None, expected: str | None) -> str:
    """agree / DISAGREE / inconclusive (too few pairs: neither a false positive nor a false negative) /
    unchecked (no independent expectation) / not run."""
    if outcome is None:
        return "not run"
    if expected is None:
        return "unchecked"
    if outcome == "inconclusive":
        return "inconclusive"
    return "agree" if VERDICT_WORD.get(outcome) == expected else "DISAGREE"


def merged(json_path: Path, fresh: Path) -> None:
    """Replace the verdicts of ``json_path`` by those of the properties re-run into ``fresh`` (the rest stay)."""
    new = json.loads(fresh.read_text())["verdicts"]
    data = json.loads(json_path.read_text()) if json_path.exists() else {"verdicts": []}
    rerun = {v["property"] for v in new}
    kept = [v for v in data["verdicts"] if v["property"] not in rerun]
    data["verdicts"] = sorted(kept + new, key=lambda v: v["property"])
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True))
    fresh.unlink()


def table(rows: dict[str, dict[str, tuple[str | None, str | None]]]) -> str:
    names = list(rows)
    lines = ["| property | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for prop in PROPERTIES:
        cells = []
        for name in names:
            outcome, expected = rows[name].get(prop, (None, None))
            got = VERDICT_WORD.get(outcome, "-") if outcome else "-"
            mark = compare(outcome, expected)
            cells.append(f"{got} ({expected or '?'}){' **DISAGREE**' if mark == 'DISAGREE' else ''}")
        lines.append(f"| {prop} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="names from expected.json (default: all)")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument(
        "--reuse", action="store_true", help="use verdicts/<model>.json already there instead of running the suite"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep verdicts/<model>.json's verdicts of the properties not re-run"
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (e.g. -k tfc1)")
    args = parser.parse_args()
    expected = json.loads((HERE / "expected.json").read_text())
    out = Path(args.out)
    (out / "verdicts").mkdir(parents=True, exist_ok=True)
    config = held_out_config(out)
    rows: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    for model in MODELS:
        if model.name not in expected or (args.models is not None and model.name not in args.models):
            continue
        if not model.available():
            print(f"{model.name}: skipped, {model.spec} is absent", flush=True)
            continue
        json_path = out / "verdicts" / f"{model.name}.json"
        if args.reuse and json_path.exists():
            code, seconds = None, 0.0
        elif args.merge:
            fresh = json_path.with_suffix(".new.json")
            code, seconds = run_suite(model.spec, fresh, config, args.pytest_args)
            merged(json_path, fresh)
        else:
            json_path.unlink(missing_ok=True)
            code, seconds = run_suite(model.spec, json_path, config, args.pytest_args)
        verdicts = {v["property"]: v["outcome"] for v in json.loads(json_path.read_text())["verdicts"]}
        want = expected[model.name]["expected"]
        rows[model.name] = {p: (verdicts.get(p), want[p]["verdict"]) for p in PROPERTIES}
        marks = [compare(*rows[model.name][p]) for p in PROPERTIES]
        kinds = ("agree", "DISAGREE", "inconclusive", "unchecked", "not run")
        counts = ", ".join(f"{mark} {marks.count(mark)}" for mark in kinds)
        ran = "reused" if code is None else f"pytest exit {code} in {seconds:.0f} s"
        print(f"{model.name}: {ran}; {counts}", flush=True)
    text = "# irmechtest verdict (expected from independent evidence)\n\n" + table(rows) + "\n"
    (out / "verdicts.md").write_text(text)
    if out == HERE:
        write_doc(expected)  # fills the irmechtest-verdict column of docs/validation.md
    print(text)


if __name__ == "__main__":
    main()
