#!/usr/bin/env python3
"""Joint - alone across mixture runs that differ only in a seed (a developer tool).

    python tools/compare_seeds.py runs/mixture-cpu runs/mixture-cpu-seed1 runs/mixture-cpu-seed2

A paired test inside one run says whether its two trained models differ on the test records; whether
the training recipes differ needs several trainings. This prints, per task and metric of the runs'
summary tables (metrics.json: systems.summary), each run's alone, joint and joint - alone, then over
the runs the mean difference, its standard deviation and a 95% t-interval (n - 1 degrees of freedom:
each run is one draw of the training noise; with 3 runs the interval is wide, as it should be).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy import stats


def _summary(run: Path) -> dict[tuple[str, str], dict]:
    path = run / "metrics.json"
    try:
        rows = json.loads(path.read_text())["systems"]["summary"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a finished mixture run's metrics ({type(e).__name__}: {e})") from None
    return {(r["task"], r["metric"]): r for r in rows}


def seed_spread(diffs: list[float]) -> dict:
    """Mean, sample standard deviation and 95% t-interval of per-run differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [mean - half, mean + half]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished mixture run folders (same config, other seeds)")
    args = ap.parse_args(argv)
    summaries = [_summary(r) for r in args.runs]
    keys = [k for k in summaries[0] if all(k in s for s in summaries[1:])]
    print("| task | metric | " + " | ".join(f"{r.name}: alone / joint / joint − alone" for r in args.runs)
          + " | mean joint − alone [95% t-interval over runs] | SD |")
    print("|---|---|" + "---|" * (len(args.runs) + 2))
    for task, metric in keys:
        rows = [s[(task, metric)] for s in summaries]
        diffs = [r["joint"]["value"] - r["alone"]["value"] for r in rows]
        spread = seed_spread(diffs)
        cells = [f"{r['alone']['value']:.3f} / {r['joint']['value']:.3f} / {d:+.3f}" for r, d in zip(rows, diffs)]
        ci = f" [{spread['ci'][0]:+.3f}, {spread['ci'][1]:+.3f}]" if spread["ci"] else ""
        sd = f"{spread['sd']:.3f}" if spread["sd"] is not None else "—"
        print(f"| {task} | {metric} | " + " | ".join(cells) + f" | {spread['mean']:+.3f}{ci} | {sd} |")


if __name__ == "__main__":
    main()
