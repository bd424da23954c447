#!/usr/bin/env python3
"""How much of a rare-ddx model's score is a prior over disease names? (a study of a finished run)

    python tools/rare_ddx_name_prior.py RUN [KEY=VALUE ...] [--betas 0,0.5,1]

The model scores a candidate by log p(name | summary). Part of that is the name alone: a short,
famous name is likely whatever the patient has. Subtracting beta x log p(name | an empty summary)
takes that part out (beta 1: pointwise mutual information of name and summary given the task's
prompt, the "domain-conditional PMI" of Holtzman et al. 2021, "Surface form competition"), leaving what the model reads from the phenotype.
For each beta and each model the run scored (fine-tuned; base model zero-shot if the run has it),
the tool prints the model alone and fused with the run's ranker, the fusion weight chosen as the
run chooses it (on its real tuning cases if it set some apart, else on its synthetic validation
patients; never on the scored cases), and the paired difference from the ranker with whole
publications resampled. Beta is chosen with the weight, on the same cases or patients: only the
chosen beta's row is a result; the other rows show what the correction does, and picking among them
by their scores on the scored cases would be tuning on the test.

KEY=VALUE overrides the run's config the way `synthdx run --set` does (e.g. rerank.tuning_split=
publications on a run that set its tuning cases apart by case). Model scores missing from the run's
caches are computed and added to them (resumable, as in the run); the content-free scores are
cached in RUN/data/scores_<model>_content_free.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from synthdx.experiments import rare_ddx as R

CHUNK = 100
"""Names scored in one batched pass over the content-free prompt (every name reuses its cache)."""


def content_free_scores(model, tokenizer, task, ids: Sequence[str], autocast_dtype=None) -> dict[str, float]:
    """{disease id: log p(name | the task's prompt with an empty summary)}: the model's prior over names."""
    from synthdx.infer.rerank import score_names

    out: dict[str, float] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start:start + CHUNK])
        scores, _ = score_names(model, tokenizer, task, [""], [chunk], autocast_dtype=autocast_dtype)
        out.update({i: round(float(s), 5) for i, s in zip(chunk, scores[0])})
    return out


def without_name_prior(scores: Sequence[dict[str, float]], free: dict[str, float],
                       beta: float) -> list[dict[str, float]]:
    """Per case, log p(name | summary) - beta x log p(name | empty summary) of each scored name that
    `free` has (a cache may hold more names than the retrieval ranks; a ranked name missing from
    `free` then fails loudly where it is ranked)."""
    return [{i: s - beta * free[i] for i, s in row.items() if i in free} for row in scores]


def study(parts: dict, scores: dict, free: dict[str, float], betas: Sequence[float], weights: Sequence[float],
          n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One row per beta. `parts` maps "cases" (scored), "val" (synthetic validation) and optionally
    "tune" (real tuning cases) to (retrieved triples, gold id lists, publication of each case or None);
    `scores` maps the same keys to the model's log-probabilities per case. The weight is chosen on
    "tune" when present, else on "val", as `synthdx run` chooses it."""
    retrieved, golds, pubs = parts["cases"]
    choose_on = "tune" if "tune" in parts else "val"
    c_ret, c_golds, c_pubs = parts[choose_on]
    v_ret, v_golds, _ = parts["val"]
    ranker_hit = np.array([r[2] == 1 for r in retrieved])
    rows = []
    for beta in betas:
        adj = {k: without_name_prior(v, free, beta) for k, v in scores.items()}
        w, table = R.choose_weight(c_ret, adj[choose_on], c_golds, weights, n_resamples, seed, groups=c_pubs)
        alone = np.asarray(R._fused_ranks(retrieved, adj["cases"], golds, float("inf"))) == 1
        fused = np.asarray(R._fused_ranks(retrieved, adj["cases"], golds, w)) == 1
        rows.append({
            "beta": beta, "weight": w, "chosen_share": table[str(w)]["chosen_share"],
            "chosen_on": {"top1": table[str(w)]["top1"], "mrr": table[str(w)]["mrr"]},
            "synthetic_alone": R._quick(R._fused_ranks(v_ret, adj["val"], v_golds, float("inf")))["top1"],
            "alone": float(alone.mean()), "fused": float(fused.mean()),
            "fused_minus_ranker": R.paired_top1("fused", fused, "ranker", ranker_hit, pubs,
                                                n_resamples=n_resamples, seed=seed)})
    return rows


def chosen_beta(rows: list[dict]) -> float:
    """The beta whose chosen weight scores best where the weight was chosen (top-1, then MRR; the
    smaller beta on a tie): beta chosen the way the weight is, never on the scored cases."""
    return max(rows, key=lambda r: (r["chosen_on"]["top1"], r["chosen_on"]["mrr"], -r["beta"]))["beta"]


def format_rows(label: str, rows: list[dict]) -> tuple[list[str], list[str]]:
    """Markdown table rows, one per beta, and a note per row naming the publications that move its
    paired difference most (is a gain spread, or one cohort's?)."""
    from synthdx.evaluate.evidence import p_text, signed

    out, notes = [], []
    for r in rows:
        largest = ", ".join(f"{x['publication']} {x['only_a']} / {x['only_b']} of {x['cases']}"
                            for x in r["fused_minus_ranker"]["largest_publications"])
        if largest:
            notes.append(f"- {label}, beta {r['beta']:g}: publications that move the difference most: {largest}")
        g = r["fused_minus_ranker"]["top1_by_publication"]
        m = r["fused_minus_ranker"]["mcnemar"]
        out.append(f"| {label} | {r['beta']:g} | {r['synthetic_alone']:.3f} | {r['alone']:.3f} | "
                   f"{r['weight']:g} ({r['chosen_share']:.0%}) | {r['fused']:.3f} | "
                   f"{signed(g['diff'])} [{signed(g['ci'][0])}, {signed(g['ci'][1])}], p = {p_text(g['p_value'])} "
                   f"({m['b']} / {m['c']}) |")
    return out, notes


def main(argv: list[str] | None = None) -> None:
    from synthdx.config import load_config
    from synthdx.io import write_json
    from synthdx.progress import StageTimer
    from synthdx.splits import publication_groups

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE, as `synthdx run --set`")
    ap.add_argument("--betas", default="0,0.5,1")
    ap.add_argument("--n-resamples", type=int, default=1000)
    a = ap.parse_args(argv)
    run = a.run
    cfg = load_config(run / "config.yaml", a.overrides)
    d = R.prepare_rare_ddx_data(cfg, run, StageTimer())
    k, data = cfg.rerank.top_k, run / "data"
    sets = {"cases": (d.sample, d.s_texts), "val": (d.val_cases, d.validation_texts())}
    if d.tuning:
        sets["tune"] = (d.tuning, [d.text_of(c, 0) for c in d.tuning])
    parts = {key: (R._retrieve(d.ranker, cases, k, False), [list(c.gold) for c in cases],
                   None if key == "val" else publication_groups(cases)) for key, (cases, _) in sets.items()}
    names = sorted({i for ret, _, _ in parts.values() for row in ret for i in row[0]})
    cache_name = {"cases": "cases", "val": "validation", "tune": "tuning"}
    models = [("fine-tuned model", str(run / "model"), "model")]
    if (data / "scores_zero_shot_cases.json").exists():
        models.append(("base model zero-shot", cfg.train.model, "zero_shot"))
    n_pubs = len(set(parts["cases"][2]))
    lines = [f"{len(d.sample)} scored cases ({n_pubs} publications); knowledge ranker top-1 "
             f"{np.mean([r[2] == 1 for r in parts['cases'][0]]):.3f}; weight chosen on "
             f"{'real tuning cases' if d.tuning else 'synthetic validation patients'}", "",
             "| model | beta | alone, synthetic validation | alone | weight (chosen in resamples) | + ranker | "
             "+ ranker minus ranker, publications resampled (only one first) |", "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for label, path, key in models:
        scores = {s: R._model_scores(path, d.task, list(sets[s][1]), [r[0] for r in parts[s][0]],
                                     data / f"scores_{key}_{cache_name[s]}.json", [c.id for c in sets[s][0]],
                                     f"{label}: {cache_name[s]}") for s in sets}
        cache = data / f"scores_{key}_content_free.json"
        free = json.loads(cache.read_text()) if cache.exists() else {}
        if not set(names) <= set(free):
            tok, model, autocast = R._load_for_scoring(path)
            free.update(content_free_scores(model, tok, d.task, [i for i in names if i not in free], autocast))
            write_json(cache, free)
        rows = study(parts, scores, free, [float(b) for b in a.betas.split(",")], cfg.rerank.weights,
                     n_resamples=a.n_resamples, seed=cfg.eval.seed)
        table, more = format_rows(label, rows)
        more.append(f"- {label}: beta chosen with the weight, on the same cases: {chosen_beta(rows):g}")
        lines += table
        notes += more
    print("\n".join(lines + [""] + notes))


if __name__ == "__main__":
    sys.exit(main())
