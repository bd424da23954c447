"""The report of a ranking experiment (rare-disease differential diagnosis): metrics.json,
report.md and a self-contained report.html built from titled sections of tables and notes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .ranking import _cell
from .sections import Section, write_sectioned_report

__all__ = ["Section", "ranking_rows", "write_ranking_report"]

RANKING_HEADER = ["system", "cases", "n", "coverage", "top-1", "top-3", "top-10", "MRR"]


def ranking_rows(systems: dict[str, dict], parts: Sequence[str] = ("all", "covered")) -> list[list[str]]:
    """Table rows (RANKING_HEADER) of systems scored by `evaluate_ranking`; a system given as
    {"published": {...}} is shown as quoted figures."""
    rows = []
    for name, s in systems.items():
        if "published" in s:
            p = s["published"]
            rows.append([name, p.get("cases", ""), str(p.get("n", "")), "", p.get("top1", "—"), "—",
                         p.get("top10", "—"), "—"])
            continue
        for part in parts:
            d = s[part]
            rows.append([name if part == parts[0] else "", part, str(d["n"]),
                         _cell(s, "coverage") if part == "all" else "",
                         _cell(d, "top1"), _cell(d, "top3"), _cell(d, "top10"), _cell(d, "mrr")])
    return rows


def write_ranking_report(out_dir: Path, title: str, sections: list[Section], metrics: dict,
                         extra: dict | None = None) -> dict[str, Path]:
    """Write metrics.json ({"title", "systems": metrics, "extra"}), report.md and report.html
    into `out_dir`, each atomically."""
    return write_sectioned_report(out_dir, title, sections, metrics, extra)
