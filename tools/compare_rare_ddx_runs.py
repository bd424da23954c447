#!/usr/bin/env python3
"""Compare two finished rare-ddx runs on the real cases both scored (a developer tool).

    python tools/compare_rare_ddx_runs.py RUN_A RUN_B [--weights 0,0.05,0.1,0.25,0.5,1]

Prints, per system (ranker, model alone, model + ranker; full annotations), the top-1 of each run,
their paired difference A - B with 95% bootstrap intervals (cases resampled, and whole publications
resampled when run A's calibration rows name each case's publication, as runs since 2026-12-07 do)
and the exact McNemar test; then the
top-1 each run's model scores would give fused with the ranker at fixed weights. The weight sweep
is measured on the scored cases themselves: a diagnostic of where a difference comes from (the model
or the weight chosen on synthetic patients), never a result to report as a test score.

It reads only what a run writes: predictions/calibration.jsonl (gold and each system's top-1 hit),
predictions/knowledge_ranker.jsonl (the ranker's top 10 and scores) and data/scores_model_cases.json
(the model's log-probability of each of those names).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synthdx.evaluate.paired import mcnemar, paired_bootstrap_correct
from synthdx.experiments.rare_ddx import _fused_ranks

SYSTEMS = ("knowledge ranker", "fine-tuned model reranks", "fine-tuned model + ranker")


def _jsonl(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _hits(cal: dict[str, dict], ids: list[str], prefix: str) -> tuple[str, np.ndarray]:
    names = [k for k in cal[ids[0]]["systems"] if k.startswith(prefix) and "own publication" not in k]
    if len(names) != 1:
        raise SystemExit(f"expected one system named {prefix!r}..., found {names}")
    return names[0], np.array([cal[i]["systems"][names[0]]["correct"] for i in ids])


def load_reranking(run: Path, cal: dict[str, dict], ids: list[str],
                   k: int = 10) -> tuple[list, list[dict], list[list[str]]]:
    """Per case of `ids`, read once: the ranker's top `k` as the experiment's `retrieved` triples
    (ids, scores, the gold's rank beyond them: inf, which no top-1 needs), the model's scores of
    those names, and the gold ids (from the run's calibration rows `cal`)."""
    ranker = _jsonl(run / "predictions" / "knowledge_ranker.jsonl")
    model = json.loads((run / "data" / "scores_model_cases.json").read_text())
    retrieved = []
    for i in ids:
        top = ranker[i]["ranking"][:k]
        retrieved.append(([e["id"] for e in top], np.array([e["score"] for e in top]), float("inf")))
    return retrieved, [model[i] for i in ids], [cal[i]["gold"] for i in ids]


def top1_at_weight(reranking: tuple[list, list[dict], list[list[str]]], weight: float) -> float:
    """Top-1 of a run's model fused with its ranker at `weight`, the way the experiment fuses."""
    return float(np.mean(np.asarray(_fused_ranks(*reranking, weight)) == 1))


def compare(run_a: Path, run_b: Path, weights: list[float], n_resamples: int = 1000) -> list[str]:
    cal_a = _jsonl(run_a / "predictions" / "calibration.jsonl")
    cal_b = _jsonl(run_b / "predictions" / "calibration.jsonl")
    ids = sorted(set(cal_a) & set(cal_b))
    if not ids:
        raise SystemExit("the two runs scored no case in common")
    lines = [f"{len(ids)} cases scored by both runs (A: {len(cal_a)}, B: {len(cal_b)})",
             "| system (A / B) | top-1 A | top-1 B | A - B [95% CI], cases resampled | p "
             "| 95% CI, publications resampled | p | only A / only B first | p (McNemar exact) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pubs = [cal_a[i].get("publication") for i in ids]
    for prefix in SYSTEMS:
        (name_a, hit_a), (name_b, hit_b) = _hits(cal_a, ids, prefix), _hits(cal_b, ids, prefix)
        pb = paired_bootstrap_correct(hit_a, hit_b, n_resamples=n_resamples, seed=0)
        by_pub = "— | —"
        if None not in pubs:
            g = paired_bootstrap_correct(hit_a, hit_b, n_resamples=n_resamples, seed=0, groups=pubs)
            by_pub = f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] | {g['p_value']:.3f}"
        mc = mcnemar(hit_a, hit_b)
        label = name_a if name_a == name_b else f"{name_a} / {name_b}"
        lines.append(f"| {label} | {hit_a.mean():.3f} | {hit_b.mean():.3f} | {pb['diff']:+.3f} "
                     f"[{pb['ci'][0]:+.3f}, {pb['ci'][1]:+.3f}] | {pb['p_value']:.3f} | {by_pub} "
                     f"| {mc['b']} / {mc['c']} | {mc['p_value']:.3f} |")
    lines += ["", "Model + ranker top-1 at fixed weights (on these cases: a diagnostic, not a result)",
              "| weight | A | B |", "|---:|---:|---:|"]
    rerank_a, rerank_b = load_reranking(run_a, cal_a, ids), load_reranking(run_b, cal_b, ids)
    for w in weights:
        lines.append(f"| {w:g} | {top1_at_weight(rerank_a, w):.3f} | {top1_at_weight(rerank_b, w):.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--weights", default="0,0.05,0.1,0.25,0.5,1",
                    help="comma-separated fusion weights for the diagnostic sweep")
    args = ap.parse_args(argv)
    print("\n".join(compare(args.run_a, args.run_b, [float(w) for w in args.weights.split(",")])))


if __name__ == "__main__":
    main()
