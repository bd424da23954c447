"""Reports built from titled sections (text, a table, plots, notes): metrics.json, report.md and
a self-contained report.html (plots inlined as PNG data URIs; report.md links the same PNGs,
written beside it in plots/)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_open, write_json
from .report import _flatten, _html_table, _jsonable, _md_table, html_page

__all__ = ["Plot", "Section", "slug", "write_sectioned_report"]


def slug(name: str) -> str:
    """A file-name-safe form of a system or source name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


@dataclass
class Plot:
    name: str
    """File stem for report.md's copy (plots/<name>.png)."""
    data_uri: str
    """'data:image/png;base64,...'"""
    alt: str = ""


@dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    num_from: int = 2
    """Columns from this one on are numbers (right-aligned, intervals muted)."""


def section_markdown(s: Section) -> list[str]:
    out = [f"## {s.title}", ""]
    if s.text:
        out += [s.text, ""]
    if s.header:
        out += [_md_table(s.header, s.rows, align_right_from=s.num_from), ""]
    out += [f"![{p.alt or p.name}](plots/{p.name}.png)" for p in s.plots] + ([""] if s.plots else [])
    return out + [f"- {n}" for n in s.notes] + ([""] if s.notes else [])


def section_html(s: Section) -> list[str]:
    parts = [f"<h2>{html.escape(s.title)}</h2>"]
    if s.text:
        parts.append(f"<p>{html.escape(s.text)}</p>")
    if s.header:
        parts.append(_html_table(s.header, s.rows, num_from=s.num_from))
    for p in s.plots:
        parts.append(f'<p><img src="{p.data_uri}" alt="{html.escape(p.alt or p.name)}" style="max-width:100%"></p>')
    if s.notes:
        parts.append('<ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    return parts


def write_plot_files(out_dir: Path, sections: list[Section]) -> None:
    """The PNGs report.md links to, in out_dir/plots/."""
    for s in sections:
        for p in s.plots:
            with atomic_open(out_dir / "plots" / f"{p.name}.png", "wb", encoding=None) as f:
                f.write(base64.b64decode(p.data_uri.split(",", 1)[1]))


def _markdown(title: str, sections: list[Section], extra: dict | None) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += section_markdown(s)
    if extra:
        out += ["## Details", "", _md_table(["key", "value"], [[k, v] for k, v in _flatten(extra)],
                                             align_right_from=2), ""]
    return "\n".join(out)


def _html(title: str, sections: list[Section], extra: dict | None) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts += section_html(s)
    if extra:
        parts.append("<h2>Details</h2>")
        parts.append(_html_table(["key", "value"], [[k, v] for k, v in _flatten(extra)], num_from=2))
    return html_page(title, "\n".join(parts))


def write_sectioned_report(out_dir: Path, title: str, sections: list[Section], metrics: dict,
                           extra: dict | None = None) -> dict[str, Path]:
    """Write metrics.json ({"title", "systems": metrics, "extra"}), report.md (+ plots/*.png) and
    report.html into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    extra = _jsonable(extra) if extra else None
    paths = {"json": out_dir / "metrics.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["json"], {"title": title, "systems": _jsonable(metrics), "extra": extra or {}})
    write_plot_files(out_dir, sections)
    with atomic_open(paths["md"]) as f:
        f.write(_markdown(title, sections, extra))
    with atomic_open(paths["html"]) as f:
        f.write(_html(title, sections, extra))
    return paths
