"""Expected verdicts from the independent evidence, by rules fixed before any irmechtest verdict on a zoo model
was looked at (docs/validation.md gives each rule's reason), and the markdown tables of evidence.md.

    python benchmarks/zoo/expected.py        # evidence.json -> expected.json + evidence.md

A property without an independent check here gets ``None`` (no expectation), with the reason; the lead's
verdict column then says what irmechtest finds, and the doc says it is unchecked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, MODELS

from irmechtest.registry import PROPERTIES as REGISTRY

REMOVED_SHARE = 0.25
"""Ablation confirms heads carry an effect when mean-ablating them removes at least a quarter of it, and (for
TFC1) more than it removes of the filler control's effect: heads that carry matching are not needed to react
to filler. Ablating as many random other heads is reported beside it but is not part of the rule: on the planted
model a random pick hit its scoring head, which every effect passes through (a bottleneck, not a matcher)."""

PROPERTIES = list(REGISTRY)
"""The built-in suite's properties, from the one place they are defined (``irmechtest.registry``)."""
CROSS_ONLY = {name for name, prop in REGISTRY.items() if prop.applies_to == ("cross-encoder",)}
UNCHECKED = "no independent check in this study"


def above_zero(stat: dict) -> bool:
    return stat["ci"][0] is not None and stat["ci"][0] > 0


def fmt(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return f"n/a (n={stat['n']})"
    low, high = stat["ci"]
    return f"{stat['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] n={stat['n']}/{stat.get('n_queries')}q"


def placebo(ev: dict) -> float:
    """How much the model tells two edits without any query relation apart: |mean delta(unrelated word) - mean
    delta(filler)| over the same passages. A word-identity quirk of this size is not a query-dependent effect."""
    b = ev["behaviour"]
    return abs(b["delta_unrelated"]["mean"] - b["delta_filler"]["mean"])


def effect(ev: dict, key: str, label: str) -> tuple[bool, str]:
    """An effect is present when its interval is above 0 and its mean exceeds the placebo contrast."""
    stat, floor = ev["behaviour"][key], placebo(ev)
    if not above_zero(stat):
        return False, f"{label} {fmt(stat)}: interval not above 0"
    present = stat["mean"] > floor
    size = "exceeds" if present else "does not exceed"
    return present, f"{label} {fmt(stat)}: interval above 0; {size} the placebo (unrelated word vs filler) {floor:.4f}"


def matching_confirmed(ev: dict) -> tuple[bool, str]:
    """Exact-match heads exist and carry TFC1: heads at or above the ratio, a TFC1 contrast, and their ablation
    removing >= REMOVED_SHARE of it and more than of the filler control's absolute effect."""
    tfc1, why_tfc1 = effect(ev, "tfc1_vs_unrelated", "TFC1 contrast")
    heads = ev.get("exact_match", {}).get("heads", [])
    if not heads:
        top = ev["exact_match"]["top"][0]
        return (
            False,
            f"no head's exact-match attention reaches {ev['exact_match']['threshold']}x (top {top[0]}: {top[1]}x)",
        )
    ab = ev["ablation"]
    m, r = ab["exact_match_heads"], ab["random_heads"]
    removed, control, filler = m["tfc1_contrast_removed"], r["tfc1_contrast_removed"], m["abs_filler_delta_removed"]
    listed = ", ".join(heads[:6]) + ("..." if len(heads) > 6 else "")
    if removed is None or control is None or filler is None:
        return False, f"{len(heads)} heads ({listed}); {why_tfc1}; an ablation share is undefined (no effect)"
    ok = tfc1 and removed >= REMOVED_SHARE and removed > filler
    why = (
        f"{len(heads)} heads >= {ev['exact_match']['threshold']}x ({listed}); {why_tfc1}; ablating them removes "
        f"{removed:.0%} of it (random heads {control:.0%}, filler's absolute effect {filler:.0%})"
    )
    return ok, why


def semantic_reuse(ev: dict) -> tuple[bool, str]:
    """STMC1 reuses the exact-match heads: an STMC1 contrast, exact-match heads confirmed, and their ablation
    removing >= REMOVED_SHARE of the STMC1 contrast."""
    stmc1, why = effect(ev, "stmc1_vs_unrelated", "STMC1 contrast")
    confirmed, _ = matching_confirmed(ev)
    if not (stmc1 and confirmed):
        return False, f"{why}; matching heads {'confirmed' if confirmed else 'not confirmed'}"
    m, r = ev["ablation"]["exact_match_heads"], ev["ablation"]["random_heads"]
    removed, control = m.get("stmc1_contrast_removed"), r.get("stmc1_contrast_removed")
    if removed is None or control is None:
        return False, f"{why}; the ablation share is undefined (no effect)"
    ok = removed >= REMOVED_SHARE
    return ok, f"{why}; ablating the exact-match heads removes {removed:.0%} of it (random heads {control:.0%})"


def expectations(name: str, ev: dict) -> dict[str, dict]:
    """property -> {"verdict": "pass" | "fail" | None, "reason": ...} for one model."""
    out: dict[str, dict] = {p: {"verdict": None, "reason": UNCHECKED} for p in PROPERTIES}

    def put(prop: str, ok: bool, reason: str) -> None:
        out[prop] = {"verdict": "pass" if ok else "fail", "reason": reason}

    put("tfc1", *effect(ev, "tfc1_vs_unrelated", "query term vs unrelated word"))
    put("axiom-tdc", *effect(ev, "tdc_high_vs_low", "highest- vs lowest-IDF query term"))
    put("axiom-stmc1", *effect(ev, "stmc1_vs_unrelated", "embedding neighbour vs unrelated word"))
    if ev["kind"] != "cross-encoder":
        for prop in CROSS_ONLY:
            out[prop] = {"verdict": None, "reason": "not applicable: bi-encoder"}
        return out
    matching, why = matching_confirmed(ev)
    put("matching-heads", matching, why)
    put("tfc1-stmc1-maps", *semantic_reuse(ev))
    if not matching:
        # Scoring and contextualisation heads act on what matching heads find; a BM25-like circuit needs them.
        for prop in ("scoring-heads", "contextualisation-heads", "circuit-fit"):
            put(prop, False, f"no confirmed exact-match heads for a relevance circuit to build on ({why})")
    if name == "planted":
        for prop in ("scoring-heads", "contextualisation-heads", "circuit-fit", "idf-in-u0", "idf-in-u0-causal"):
            put(prop, True, "planted by construction (irmechtest/controls/planted.py, docs/planted.md)")
    if name == "planted-random":
        for prop in ("idf-in-u0", "idf-in-u0-causal"):
            put(prop, False, "random-init embeddings carry no IDF")
    if name == "random-like":
        for prop in ("idf-in-u0", "idf-in-u0-causal"):
            put(prop, False, "random-init embeddings carry no IDF")
    return out


def write_markdown(results: dict, path: Path, expected: dict | None = None) -> None:
    """evidence.md: the evidence per model and, when given, the expected verdicts."""
    lines = [
        "# Independent evidence (generated by benchmarks/zoo/expected.py from evidence.json; do not edit)",
        "",
        "Score deltas are raw logits (cosine for the bi-encoder): mean [95 % interval, bootstrap over queries] "
        "n=pairs/queries.",
        "",
        "| model | nDCG@10 | TFC1: term - unrelated | term - filler | STMC1: neighbour - unrelated "
        "| TDC: high - low IDF |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in MODELS:
        if m.name not in results:
            continue
        ev, b = results[m.name], results[m.name]["behaviour"]
        ndcg = ev["ndcg@10"]["ndcg@10"]
        cells = [fmt(b[k]) for k in ("tfc1_vs_unrelated", "tfc1_vs_filler", "stmc1_vs_unrelated", "tdc_high_vs_low")]
        lines.append(f"| {m.name} | {'n/a' if ndcg is None else f'{ndcg:.3f}'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Exact-match heads (query token -> same token in the passage, x chance) and mean ablation: share removed.",
        "",
        "| model | top heads (x chance) | heads >= threshold | TFC1 contrast removed (exact-match / random heads) "
        "| STMC1 contrast removed | abs term delta removed | abs filler delta removed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in MODELS:
        ev = results.get(m.name)
        if not ev or "exact_match" not in ev:
            continue
        em = ev["exact_match"]
        top = ", ".join(f"{h} {r:.1f}" for h, r in em["top"][:5])
        row = [m.name, top, str(len(em["heads"]))]
        if "ablation" in ev:
            a, r = ev["ablation"]["exact_match_heads"], ev["ablation"]["random_heads"]

            def pct(x):
                return "n/a" if x is None else f"{x:.0%}"

            row += [
                f"{pct(a['tfc1_contrast_removed'])} / {pct(r['tfc1_contrast_removed'])}",
                f"{pct(a.get('stmc1_contrast_removed'))} / {pct(r.get('stmc1_contrast_removed'))}",
                f"{pct(a['abs_term_delta_removed'])} / {pct(r['abs_term_delta_removed'])}",
                f"{pct(a['abs_filler_delta_removed'])} / {pct(r['abs_filler_delta_removed'])}",
            ]
        else:
            row += ["no heads to ablate"] * 4
        lines.append("| " + " | ".join(row) + " |")
    if expected:
        names = [m.name for m in MODELS if m.name in expected]
        lines += ["", "Expected verdicts (pass / fail; ? = no independent check)", ""]
        lines += ["| property | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for prop in PROPERTIES:
            cells = [expected[n]["expected"][prop]["verdict"] or "?" for n in names]
            lines.append(f"| {prop} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


DOC = HERE.parents[1] / "docs" / "validation.md"
BEGIN, END = "<!-- begin: generated by benchmarks/zoo/expected.py -->", "<!-- end: generated -->"


def verdict_of(name: str, prop: str) -> str:
    """irmechtest's verdict from validate.py's output for this model, or blank when it has not been run."""
    path = HERE / "verdicts" / f"{name}.json"
    if not path.exists():
        return ""
    found = {v["property"]: v for v in json.loads(path.read_text())["verdicts"]}
    return found[prop]["outcome"] if prop in found else ""


def doc_section(expected: dict) -> str:
    """Per model: each property's expected verdict, the independent evidence behind it, irmechtest's verdict."""
    lines = []
    for name, entry in expected.items():
        lines += [f"### {name}: {entry['about']}", "", f"Spec: `{entry['spec']}`", ""]
        lines += ["| property | expected | independent evidence | irmechtest verdict |", "| --- | --- | --- | --- |"]
        for prop in PROPERTIES:
            e = entry["expected"][prop]
            reason = e["reason"].replace("|", "\\|")
            lines.append(f"| {prop} | {e['verdict'] or '?'} | {reason} | {verdict_of(name, prop)} |")
        lines.append("")
    return "\n".join(lines)


def write_doc(expected: dict) -> None:
    """Replace the generated block of docs/validation.md (the text around it is written by hand)."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    DOC.write_text(f"{head}{BEGIN}\n{doc_section(expected)}\n{END}{tail}")


def main() -> None:
    results = json.loads((HERE / "evidence.json").read_text())
    expected = {
        m.name: {"spec": m.spec, "about": m.about, "expected": expectations(m.name, results[m.name])}
        for m in MODELS
        if m.name in results
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    write_markdown(results, HERE / "evidence.md", expected)
    write_doc(expected)
    print(f"wrote {HERE / 'expected.json'}, {HERE / 'evidence.md'} and the tables of {DOC}")


if __name__ == "__main__":
    main()
