"""Build the zoo's surgical regression: ``ce-minilm-trecdl-s1`` with its exact-match heads mean-ablated in the
weights, saved like any user checkpoint (safetensors + tokenizer), so a release gate can be shown to catch it.

The heads are those evidence.py finds on the normal model (exact-match attention >= ``MATCH_RATIO`` x chance;
run evidence.py on ``zoo-normal`` first). Mean ablation, folded: a head's z at every position is the
attention-weighted sum of its values; with the head's W_V rows zeroed and its value bias set to the head's mean z
over the reference pairs, every value is that mean, and since attention weights sum to 1 so is z. The script
checks that the folded model scores like the original under hook-level mean ablation, then records nDCG@10 on
the zoo's test queries (as the zoo's training script does) in the model folder's metrics.json.

    python benchmarks/zoo/build_ablated.py [--evidence benchmarks/zoo/evidence.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ABLATED, EXTRA_DIR, HERE, NORMAL, ZOO_DIR, load_trec, score_pairs, test_ndcg, zoo_split
from evidence import head_means, mean_ablation_hooks, reference_pairs, score

from irmechtest.loading import load_ranker

TOLERANCE = 1e-4
"""Folded and hook-level ablation differ only by float rounding (different summation order)."""


def fold_mean_ablation(model, heads: list[tuple[int, int]], means: torch.Tensor) -> None:
    """Zero each head's W_V rows and set its value bias to its mean z (BERT-family self-attention)."""
    d_head = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer, head in heads:
            value = model.base_model.encoder.layer[layer].attention.self.value
            rows = slice(head * d_head, (head + 1) * d_head)
            value.weight[rows] = 0.0
            value.bias[rows] = means[layer, head]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evidence", default=str(HERE / "evidence.json"))
    parser.add_argument("--out", default=str(EXTRA_DIR / ABLATED))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    normal_dir = ZOO_DIR / NORMAL
    found = json.loads(Path(args.evidence).read_text())["zoo-normal"]["exact_match"]
    heads = [tuple(int(x) for x in label.split(".")) for label in found["heads"]]
    if not heads:
        raise SystemExit("evidence.py found no exact-match heads on the normal model: nothing to ablate")
    print(f"ablating {len(heads)} heads: {found['heads']}", flush=True)

    original = load_ranker(str(normal_dir))
    means = head_means(original, *reference_pairs())
    model = AutoModelForSequenceClassification.from_pretrained(normal_dir, torch_dtype=torch.float32)
    fold_mean_ablation(model, heads, means)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(normal_dir).save_pretrained(out)

    trec, split = load_trec(), zoo_split()
    check = [
        (trec[q]["query"], " ".join(t.split()[:60]))
        for q in split["test_qids"][:8]
        for _, t, _ in trec[q]["passages"][:4]
    ]
    queries, docs = [q for q, _ in check], [d for _, d in check]
    with original.hooks(mean_ablation_hooks(heads, means)):
        hooked = score(original, queries, docs)
    folded = score(load_ranker(str(out)), queries, docs)
    gap = float(np.abs(hooked - folded).max())
    print(f"folded vs hook-level mean ablation on {len(check)} pairs: max |diff| {gap:.2e}", flush=True)
    if gap > TOLERANCE:
        raise SystemExit(f"folded ablation differs from hook-level ablation by {gap:.2e} > {TOLERANCE}")

    tokenizer = AutoTokenizer.from_pretrained(out)
    evaluation = test_ndcg(lambda pairs: score_pairs(model, tokenizer, pairs), trec, split["test_qids"])
    print(f"nDCG@10 on {evaluation['n_queries']} test queries: {evaluation['ndcg@10']:.4f}", flush=True)
    metrics = {
        "script": "benchmarks/zoo/build_ablated.py",
        "source": str(normal_dir),
        "ablated_heads": found["heads"],
        "rule": f"exact-match attention >= {found['threshold']}x chance (benchmarks/zoo/evidence.py)",
        "mean_over": "every real token of 32 judged pairs of the zoo's training queries (evidence.reference_pairs)",
        "check": {"pairs": len(check), "max_abs_diff_vs_hooks": gap, "tolerance": TOLERANCE},
        "split": split,
        "evaluation": {"original_passages": evaluation},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
