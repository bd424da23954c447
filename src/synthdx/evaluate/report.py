"""Reports of one or more evaluated systems: metrics.json, report.md and a self-contained report.html.

Each system is the dict `evaluate_system` returns (or `multilabel_scores`, without intervals), with
optional extra keys: `"invalid_outputs": int`, `"n": int`, `"notes": str`, and anything else JSON-able.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_open, write_json

__all__ = ["format_table", "headline_rows", "write_report"]

_DASH = "—"


def _jsonable(x: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, paths as strings, NaN/inf as None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return _DASH
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def _with_ci(d: dict | None, key: str = "f1") -> str:
    """'0.873 [0.851, 0.893]', or just '0.873' without an interval."""
    if not d or d.get(key) is None:
        return _DASH
    ci = d.get(f"{key}_ci")
    if ci and len(ci) == 2 and None not in ci:
        return f"{_num(d[key])} [{_num(ci[0])}, {_num(ci[1])}]"
    return _num(d[key])


def _ci_label(systems: dict[str, dict]) -> str:
    alphas = {s.get("bootstrap", {}).get("alpha") for s in systems.values() if s.get("bootstrap")}
    if len(alphas) == 1:
        (a,) = alphas
        return f"{100 * (1 - a):g}% CI"
    return "CI"


def _n(s: dict) -> str:
    return str(s["n"]) if s.get("n") is not None else _DASH


def _invalid(s: dict) -> str:
    v = s.get("invalid_outputs")
    return _DASH if v is None else str(v)


def headline_rows(systems: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the headline table, as strings."""
    ci = _ci_label(systems)
    header = ["system", "n", f"micro-F1 [{ci}]", f"macro-F1 [{ci}]", "micro-P", "micro-R", "invalid outputs"]
    rows = []
    for name, s in systems.items():
        micro, macro = s.get("micro") or {}, s.get("macro") or {}
        rows.append([str(name), _n(s), _with_ci(micro), _with_ci(macro),
                     _num(micro.get("precision")), _num(micro.get("recall")), _invalid(s)])
    return header, rows


def _label_rows(systems: dict[str, dict], names: list[str]
                ) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """(header, rows, best) of the per-label F1 table; best[i][k] marks the top F1 of row i."""
    header = ["label", "support"] + [str(s) for s in systems]
    rows, best = [], []
    for label in names:
        cells, f1s, supports = [], [], []
        for s in systems.values():
            d = (s.get("per_label") or {}).get(label)
            cells.append(_with_ci(d))
            f1s.append(d.get("f1") if d else None)
            if d and d.get("support") is not None:
                supports.append(int(d["support"]))
        support = "/".join(str(v) for v in dict.fromkeys(supports)) or _DASH
        top = max((f for f in f1s if f is not None), default=None)
        best.append([len(systems) > 1 and f is not None and top is not None and f == top and top > 0
                     for f in f1s])
        rows.append([label, support] + cells)
    return header, rows, best


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Dotted key -> value text; lists of scalars inline, long values JSON."""
    if isinstance(d, dict) and d:
        out = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, float):
        text = f"{d:.4g}"
    elif isinstance(d, (str, int, bool)) or d is None:
        text = str(d)
    else:
        text = json.dumps(d, ensure_ascii=False)
    return [(prefix or "value", text)]


def format_table(systems: dict[str, dict]) -> str:
    """The headline table as aligned plain text, for a terminal."""
    header, rows = headline_rows(systems)
    widths = [max(len(r[k]) for r in [header] + rows) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(r) for r in rows])


# ---------------------------------------------------------------- markdown

def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], align_right_from: int = 1,
              bold: list[list[bool]] | None = None, bold_offset: int = 0) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(":---" if k < align_right_from else "---:" for k in range(len(header))) + "|"]
    for i, r in enumerate(rows):
        cells = [_md_cell(c) for c in r]
        if bold:
            for k, b in enumerate(bold[i]):
                if b:
                    cells[bold_offset + k] = f"**{cells[bold_offset + k]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(systems: dict[str, dict]) -> list[tuple[str, str]]:
    return [(str(k), str(s["notes"])) for k, s in systems.items() if s.get("notes")]


def _bootstrap_line(systems: dict[str, dict]) -> str | None:
    bs = [s["bootstrap"] for s in systems.values() if s.get("bootstrap")]
    if not bs:
        return None
    b = bs[0]
    same = all(x == b for x in bs)
    text = (f"Intervals: {100 * (1 - b['alpha']):g}% percentile bootstrap, {b['n_resamples']} resamples "
            f"of the records (seed {b['seed']})")
    return text + ("." if same else "; systems differ in bootstrap settings, see metrics.json.")


_CONVENTION = ("F1 with zero_division=0 (a label with no true and no predicted positives scores 0); "
               "macro-F1 is the unweighted mean over all labels of the label space.")


def _markdown(title: str, systems: dict[str, dict], names: list[str], extra: dict | None,
              sections: list | None = None) -> str:
    from .sections import section_markdown

    out = [f"# {title}", ""]
    header, rows = headline_rows(systems)
    out += [_md_table(header, rows), ""]
    bl = _bootstrap_line(systems)
    out += [f"{bl} {_CONVENTION}" if bl else _CONVENTION, ""]
    notes = _notes(systems)
    if notes:
        out += ["Notes:", ""] + [f"- **{_md_cell(k)}**: {v}" for k, v in notes] + [""]
    out += ["## Per-label F1", ""]
    lh, lr, best = _label_rows(systems, names)
    out += [_md_table(lh, lr, bold=best, bold_offset=2), ""]
    if len(systems) > 1:
        out += ["Bold: the best F1 of the row.", ""]
    for s in sections or []:
        out += section_markdown(s)
    if extra:
        out += ["## Details", "", _md_table(["key", "value"], [[k, v] for k, v in _flatten(extra)],
                                             align_right_from=2), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#1f2328;max-width:1100px;margin:2rem auto;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.92rem}
th,td{border:1px solid #d0d7de;padding:.35rem .65rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fbfcfd}
td.best{font-weight:600;background:#eef7ee !important}
.ci{color:#656d76;font-size:.85em}
p.small,li{font-size:.9rem;color:#424a53}
code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
"""


def _html_value(text: str) -> str:
    """'0.873 [0.851, 0.893]' -> point with a muted interval."""
    e = html.escape(text)
    if " [" in text and text.endswith("]"):
        point, ci = text.split(" [", 1)
        return f'{html.escape(point)} <span class="ci">[{html.escape(ci)}</span>'
    return e


_NUMERIC = re.compile(r"^\s*([-+−<>≈—]|\d|$)")


def _html_table(header: list[str], rows: list[list[str]], num_from: int = 1,
                best: list[list[bool]] | None = None, best_offset: int = 0) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = []
    for i, r in enumerate(rows):
        tds = []
        for k, c in enumerate(r):
            cls = []
            if k >= num_from and _NUMERIC.match(c):  # words (e.g. a list of terms) still wrap
                cls.append("num")
            if best and k >= best_offset and best[i][k - best_offset]:
                cls.append("best")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            tds.append(f"<td{attr}>{_html_value(c) if k >= num_from else html.escape(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html(title: str, systems: dict[str, dict], names: list[str], extra: dict | None,
          sections: list | None = None) -> str:
    from .sections import section_html

    parts = [f"<h1>{html.escape(title)}</h1>"]
    header, rows = headline_rows(systems)
    parts.append(_html_table(header, rows))
    bl = _bootstrap_line(systems)
    conv = f"{bl} {_CONVENTION}" if bl else _CONVENTION
    parts.append(f'<p class="small">{html.escape(conv)}</p>')
    notes = _notes(systems)
    if notes:
        parts.append("<ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in notes)
                     + "</ul>")
    parts.append("<h2>Per-label F1</h2>")
    lh, lr, best = _label_rows(systems, names)
    parts.append(_html_table(lh, lr, best=best, best_offset=2))
    if len(systems) > 1:
        parts.append('<p class="small">Highlighted: the best F1 of the row.</p>')
    for s in sections or []:
        parts += section_html(s)
    if extra:
        parts.append("<h2>Details</h2>")
        rows_x = [[k, v] for k, v in _flatten(extra)]
        parts.append(_html_table(["key", "value"], rows_x, num_from=2))
    return html_page(title, "\n".join(parts))


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (the report's CSS inline) around `body`."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_report(out_dir: Path, title: str, systems: dict[str, dict], names: list[str],
                 extra: dict | None = None, sections: list | None = None,
                 evidence: dict | None = None) -> dict[str, Path]:
    """Write `metrics.json` (title, label names, every system's dict, extra), `report.md` and
    `report.html` (headline table, per-label F1 with support, and a Details section from `extra`)
    into `out_dir`, each atomically; `sections` (evaluate.sections.Section: paired tests,
    calibration, ...) go before the Details, and `evidence` (their numbers) into metrics.json.
    Returns {"json"|"md"|"html": path}."""
    from .sections import write_plot_files

    out_dir = Path(out_dir)
    systems = _jsonable(systems)
    extra = _jsonable(extra) if extra else None
    paths = {"json": out_dir / "metrics.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["json"], {"title": title, "labels": list(names), "systems": systems,
                               "evidence": _jsonable(evidence or {}), "extra": extra or {}})
    write_plot_files(out_dir, sections or [])
    with atomic_open(paths["md"]) as f:
        f.write(_markdown(title, systems, list(names), extra, sections))
    with atomic_open(paths["html"]) as f:
        f.write(_html(title, systems, list(names), extra, sections))
    return paths
