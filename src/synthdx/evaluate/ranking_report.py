"""The report of a ranking experiment (rare-disease differential diagnosis): metrics.json,
report.md and a self-contained report.html built from titled sections of tables and notes."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..io import atomic_open, write_json
from .ranking import _cell
from .report import _flatten, _html_table, _jsonable, _md_table, html_page

__all__ = ["Section", "ranking_rows", "write_ranking_report"]

RANKING_HEADER = ["system", "cases", "n", "coverage", "top-1", "top-3", "top-10", "MRR"]


@dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _markdown(title: str, sections: list[Section], extra: dict | None) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.header:
            out += [_md_table(s.header, s.rows), ""]
        out += [f"- {n}" for n in s.notes] + ([""] if s.notes else [])
    if extra:
        out += ["## Details", "", _md_table(["key", "value"], [[k, v] for k, v in _flatten(extra)],
                                             align_right_from=2), ""]
    return "\n".join(out)


def _html(title: str, sections: list[Section], extra: dict | None) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.header:
            parts.append(_html_table(s.header, s.rows, num_from=2))
        if s.notes:
            parts.append('<ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    if extra:
        parts.append("<h2>Details</h2>")
        parts.append(_html_table(["key", "value"], [[k, v] for k, v in _flatten(extra)], num_from=2))
    return html_page(title, "\n".join(parts))


def write_ranking_report(out_dir: Path, title: str, sections: list[Section], metrics: dict,
                         extra: dict | None = None) -> dict[str, Path]:
    """Write metrics.json ({"title", "systems": metrics, "extra"}), report.md and report.html
    into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    extra = _jsonable(extra) if extra else None
    paths = {"json": out_dir / "metrics.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["json"], {"title": title, "systems": _jsonable(metrics), "extra": extra or {}})
    with atomic_open(paths["md"]) as f:
        f.write(_markdown(title, sections, extra))
    with atomic_open(paths["html"]) as f:
        f.write(_html(title, sections, extra))
    return paths
