"""Knowledge-based rare-disease ranker on phenopacket-store cases: coverage, top-1/3/10 and MRR
with bootstrap intervals, over all and over covered cases, with the full HPO knowledge and with
each case's own publication's annotations left out; plus the time taken.

    nice -n 19 python benchmarks/rare_ddx_ranker.py
        [--cases ../shared/data/phenopacket-store/phenopacket-store.dev.zip] [--limit N] [--resamples 1000] [--json out.json] [--param name=value ...]

Rows: the ranker with the full HPO knowledge; with every annotation that cites the case's own
publication left out (strict: also rows citing other publications besides it); and with only the
annotations that cite nothing but the case's own publication left out (lenient). The knowledge
"without this publication" lies between the last two. `--param prior=publications` adds the
publication prior (log(1 + PMIDs the disease's annotations cite), the case's own left out with it).

Reference points (phenopacket-store cases): a tuned LIRICAL-style ranker ~38% top-1 of all dev
cases (46% of covered); Reese et al. 2024 (AJHG, 5,213 cases): Exomiser 35.5% top-1, GPT-4o 23.6%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthdx.baselines.phenotype_ranker import PhenotypeRanker
from synthdx.datasets.phenopackets import load_phenopackets
from synthdx.evaluate.ranking import evaluate_ranking, format_ranking_table
from synthdx.knowledge.hpo import load_hpo

DEFAULT_CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "phenopacket-store" / \
    "phenopacket-store.dev.zip"


def _param(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    for conv in (int, float):
        try:
            return name, conv(value)
        except ValueError:
            pass
    return name, {"true": True, "false": False}.get(value.lower(), value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    ap.add_argument("--limit", type=int, default=None, help="only the first N cases (sorted by member)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None, help="also write the full results here")
    ap.add_argument("--param", action="append", default=[], type=_param,
                    help="a PhenotypeRanker argument, e.g. noise=0.02 (repeatable)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cases = [c for c in load_phenopackets(args.cases) if c.gold is not None]
    if args.limit:
        cases = cases[:args.limit]
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    knowledge = load_hpo()
    ranker = PhenotypeRanker(knowledge, **dict(args.param)).fit()
    t_fit = time.perf_counter() - t0
    sole = PhenotypeRanker(knowledge, **{**dict(args.param), "leave_out": "sole"}).fit()
    cand = set(ranker.candidates_)
    covered = np.array([any(g in cand for g in c.gold) for c in cases])
    n_obs = [len(c.patient.observed) for c in cases]

    systems, timings = {}, {}
    runs = (("ranker", ranker, False),
            ("own publication left out", ranker, True),
            ("own publication left out (sole)", sole, True))
    for name, rk, leave_out in runs:
        t0 = time.perf_counter()
        ranks = [rk.gold_rank(s, c.gold)
                 for s, c in zip(rk.scores_many((c.patient for c in cases), leave_out), cases)]
        timings[name] = time.perf_counter() - t0
        systems[name] = evaluate_ranking(ranks, covered, n_obs, n_resamples=args.resamples)

    print(f"cases: {args.cases} ({len(cases)} labelled cases)")
    print(f"knowledge: HPO {knowledge.version}, {len(ranker.candidates_)} candidate OMIM diseases; "
          f"ranker params: { {k: v for k, v in ranker.get_params().items() if k != 'knowledge'} }")
    print()
    print(format_ranking_table(systems))
    print()
    print("top-1 by number of observed terms (all cases of the bin):")
    for name, s in systems.items():
        cells = [f"{b}: {d['top1']:.3f} (n={d['n']})" for b, d in s["by_n_observed"].items()]
        print(f"  {name}: " + "; ".join(cells))
    print()
    n = len(cases)
    print(f"time: load cases {t_load:.1f} s, HPO + fit {t_fit:.1f} s, "
          + ", ".join(f"rank [{k}] {v:.1f} s ({1000 * v / n:.1f} ms a case)" for k, v in timings.items()))
    if args.json:
        args.json.write_text(json.dumps({"cases": str(args.cases), "n": n, "systems": systems,
                                         "timings_s": timings, "params": dict(args.param)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
