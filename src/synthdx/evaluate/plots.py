"""Figures for the HTML reports, as self-contained PNG data URIs (`<img src="data:image/png;base64,...">`).

Each function draws with matplotlib's Agg backend (no display needed), returns the data URI and,
given `path`, also writes the PNG there (atomically). Colours come from the Okabe-Ito palette, which
stays distinguishable under the common colour-vision deficiencies; lines also differ by marker.
Figures are 8 inches wide at 100 dpi: 800 px, small files (tens of kB), text readable at that width.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogLocator, NullLocator,  # noqa: E402
                               PercentFormatter)

from ..io import atomic_open  # noqa: E402

__all__ = ["PALETTE", "bar_comparison_plot", "learning_curve_plot", "reliability_plot"]

# Okabe & Ito (2008), black last (kept for reference lines).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_REF_STYLES = ["--", ":", "-.", (0, (5, 2, 1, 2))]
_REF_COLOURS = ["#4d4d4d", "#8c8c8c", "#000000", "#666666"]
_DPI = 100
_WIDTH = 8.0

_RC = {
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11.5,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "legend.framealpha": 0.92,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8, "axes.axisbelow": True, "axes.edgecolor": "#555555",
    "font.family": "DejaVu Sans", "savefig.facecolor": "white", "figure.facecolor": "white",
}


def _finite(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _to_uri(fig: Figure, path: str | Path | None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.15,
                metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        with atomic_open(path, "wb") as f:
            f.write(data)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fmt_n(n: float) -> str:
    n = float(n)
    if n >= 10_000 and n % 1000 == 0:
        return f"{n / 1000:g}k"
    return f"{n:,.0f}" if n == int(n) else f"{n:g}"


def _fmt_count(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


# ---------------------------------------------------------------- learning curves

def learning_curve_plot(curves: Mapping[str, Sequence[Mapping]], metric_label: str = "micro-F1",
                        title: str = "", *, references: Mapping[str, float] | None = None,
                        x_label: str = "training examples (n, log scale)",
                        ylim: tuple[float, float] | None = None,
                        path: str | Path | None = None) -> str:
    """Lines with markers and shaded interval bands: `curves` maps a system to its points
    `{"n", "mean", "lo", "hi"}` (lo/hi may be missing or NaN: then no band there; an optional
    "per_seed" list is drawn as small dots). The x axis is
    logarithmic with the measured n values as ticks; `references` (name -> value) are drawn as
    horizontal dashed lines, e.g. {"rule teacher": 0.81, "published": 0.85}. Returns a PNG data URI."""
    with plt.rc_context(_RC):
        n_legend = len(curves) + len(references or {})
        fig, ax = plt.subplots(figsize=(_WIDTH, 4.6 if n_legend <= 3 else 5.2))
        all_n: set[float] = set()
        ys: list[float] = []
        drawn = 0
        for k, (name, points) in enumerate(curves.items()):
            pts = sorted(((_finite(p.get("n")), p) for p in points if _finite(p.get("n")) is not None
                          and _finite(p.get("n")) > 0), key=lambda t: t[0])
            xs = [n for n, _ in pts]
            means = [_finite(p.get("mean")) for _, p in pts]
            los = [_finite(p.get("lo")) for _, p in pts]
            his = [_finite(p.get("hi")) for _, p in pts]
            if not xs:
                continue
            colour, marker = PALETTE[k % (len(PALETTE) - 1)], _MARKERS[k % len(_MARKERS)]
            m = [float("nan") if v is None else v for v in means]
            ax.plot(xs, m, marker=marker, color=colour, lw=2.2, ms=7, mec="white", mew=1.2, label=str(name),
                    zorder=3)
            # single seeds (optional "per_seed" values) as small dots around the mean
            for x, (_, p) in zip(xs, pts):
                seeds = [v for v in (_finite(v) for v in p.get("per_seed") or []) if v is not None]
                if len(seeds) > 1:
                    ax.scatter([x] * len(seeds), seeds, s=9, color=colour, alpha=0.55, lw=0, zorder=2)
            has_ci = [lo is not None and hi is not None for lo, hi in zip(los, his)]
            # Bands over runs of consecutive points with an interval; a lone one gets an error bar.
            run: list[int] = []
            for i in range(len(xs) + 1):
                if i < len(xs) and has_ci[i]:
                    run.append(i)
                    continue
                if len(run) >= 2:
                    ax.fill_between([xs[j] for j in run], [los[j] for j in run], [his[j] for j in run],
                                    color=colour, alpha=0.18, lw=0, zorder=1)
                elif len(run) == 1:
                    j = run[0]
                    centre = means[j] if means[j] is not None else (los[j] + his[j]) / 2
                    yerr = [[max(centre - los[j], 0)], [max(his[j] - centre, 0)]]
                    ax.errorbar([xs[j]], [centre], yerr=yerr, fmt="none", ecolor=colour, elinewidth=1.6,
                                capsize=5, zorder=2)
                run = []
            all_n.update(xs)
            ys += [v for v in means + los + his if v is not None]
            drawn += 1
        for j, (name, value) in enumerate((references or {}).items()):
            v = _finite(value)
            if v is None:
                continue
            ax.axhline(v, color=_REF_COLOURS[j % len(_REF_COLOURS)], ls=_REF_STYLES[j % len(_REF_STYLES)],
                       lw=1.6, label=f"{name} ({v:.3g})", zorder=2)
            ys.append(v)
        if not drawn and not ys:
            _empty(ax)
        else:
            if all_n:
                ticks = sorted(all_n)
                lo_n, hi_n = ticks[0], ticks[-1]
                if lo_n == hi_n:
                    ax.set_xlim(lo_n / 2, hi_n * 2)
                else:
                    ax.set_xlim(lo_n / 1.35, hi_n * 1.35)
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticklabels([_fmt_n(t) for t in ticks])
                if len(ticks) > 9:
                    plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
                ax.grid(True, which="major", axis="both")
            else:
                ax.set_xticks([])
            if ylim is not None:
                ax.set_ylim(*ylim)
            elif ys:
                lo_y, hi_y = min(ys), max(ys)
                pad = max(0.04 * (hi_y - lo_y), 0.01)
                lo_y, hi_y = lo_y - pad, hi_y + pad
                if min(ys) >= 0 and max(ys) <= 1:  # a score in [0, 1]: pad only as far as a marker needs
                    if hi_y - lo_y < 0.05:
                        mid = (hi_y + lo_y) / 2
                        lo_y, hi_y = mid - 0.025, mid + 0.025
                    edge = 0.015 * (hi_y - lo_y)
                    lo_y, hi_y = max(lo_y, -edge), min(hi_y, 1.0 + edge)
                ax.set_ylim(lo_y, hi_y)
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric_label)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                if len(handles) <= 3 and max(len(t) for t in labels) <= 40:
                    ax.legend(loc="best")
                else:  # below the axes, so the plot keeps the full width
                    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2 if len(all_n) <= 9 else -0.3),
                              ncol=2 if len(handles) > 2 else len(handles), frameon=False,
                              handlelength=2.6, columnspacing=1.6)
        if title:
            ax.set_title(title, loc="left")
        fig.tight_layout()
        return _to_uri(fig, path)


# ---------------------------------------------------------------- reliability

def reliability_plot(systems: Mapping[str, Mapping], title: str = "Reliability (calibration)", *,
                     path: str | Path | None = None) -> str:
    """A reliability diagram: per system, the mean predicted probability ("confidence") against the
    observed frequency ("frequency") in each bin, with the diagonal of perfect calibration; "ece"
    (optional) is shown in the legend. Below, the number of predictions per bin ("count").
    Empty bins (count 0, or a NaN) are skipped. Returns a PNG data URI."""
    with plt.rc_context(_RC):
        fig, (ax, hx) = plt.subplots(2, 1, figsize=(_WIDTH, 6.6), sharex=True,
                                     gridspec_kw={"height_ratios": [3.2, 1.0], "hspace": 0.08})
        ax.plot([0, 1], [0, 1], color="#777777", ls="--", lw=1.3, label="perfectly calibrated", zorder=1)
        k_sys = max(len(systems), 1)
        width = 0.8 / (10 * k_sys)
        any_counts = False
        for k, (name, s) in enumerate(systems.items()):
            conf = list(s.get("confidence") or [])
            freq = list(s.get("frequency") or [])
            count = list(s.get("count") or [None] * len(conf))
            count += [None] * (len(conf) - len(count))
            pts = [(c, f, n) for c, f, n in zip(map(_finite, conf), map(_finite, freq), map(_finite, count))
                   if c is not None and f is not None and (n is None or n > 0)]
            colour, marker = PALETTE[k % (len(PALETTE) - 1)], _MARKERS[k % len(_MARKERS)]
            ece = _finite(s.get("ece"))
            label = f"{name} (ECE {ece:.3f})" if ece is not None else str(name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, lw=2, ms=7,
                        mec="white", mew=1.1, label=label, zorder=3)
            else:
                ax.plot([], [], marker=marker, color=colour, label=label)
            hist = [(c, n) for c, n in zip(map(_finite, conf), map(_finite, count))
                    if c is not None and n is not None and n > 0]
            if hist:
                any_counts = True
                offset = (k - (k_sys - 1) / 2) * width
                hx.bar([c + offset for c, _ in hist], [n for _, n in hist], width=width, color=colour,
                       alpha=0.85, lw=0)
        ax.set_xlim(-0.02, 1.02)  # a little room: markers at 0 or 1 are not cut in half
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("observed frequency of positives")
        ax.legend(loc="upper left")
        if title:
            ax.set_title(title, loc="left")
        if any_counts:
            hx.set_yscale("log")
            hx.set_ylim(bottom=0.8)
            hx.yaxis.set_major_locator(LogLocator(base=10, numticks=4))
            hx.yaxis.set_minor_locator(NullLocator())
            hx.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_count(v)))
            hx.set_ylabel("count (log)")
        else:
            hx.set_yticks([])
            hx.set_ylabel("count")
        hx.set_xlabel("predicted probability (confidence)")
        hx.set_xlim(-0.02, 1.02)
        hx.set_xticks([i / 10 for i in range(11)])
        fig.align_ylabels([ax, hx])
        return _to_uri(fig, path)


# ---------------------------------------------------------------- grouped bars

def bar_comparison_plot(rows: Mapping[str, Mapping[str, float]], title: str = "", *, value_label: str = "",
                        percent: bool | None = None, path: str | Path | None = None) -> str:
    """Grouped horizontal bars: `rows` maps a row label (e.g. a finding) to {series: value}
    (e.g. {"synthetic": 0.12, "real": 0.08}); series keep their first-seen order, rows their order
    top to bottom. Values in [0, 1] are shown as percentages unless `percent=False`. Missing or NaN
    values draw no bar. Returns a PNG data URI."""
    labels = [str(r) for r in rows]
    series: list[str] = []
    for d in rows.values():
        for s in d:
            if str(s) not in series:
                series.append(str(s))
    values = [[_finite((rows[r] or {}).get(s)) for s in series] for r in rows]
    flat = [v for row in values for v in row if v is not None]
    if percent is None:
        percent = bool(flat) and all(0 <= v <= 1 for v in flat)
    with plt.rc_context(_RC):
        n_rows, n_ser = max(len(labels), 1), max(len(series), 1)
        height = min(max(2.4, 0.18 * n_rows * max(n_ser, 1.5) + 0.22 * n_rows + 1.4), 30)
        fig, ax = plt.subplots(figsize=(_WIDTH, height))
        if not flat:
            _empty(ax)
        else:
            group = 0.8
            bar_h = group / n_ser
            vmax = max(flat + [0.0])
            vmin = min(flat + [0.0])
            span = (vmax - vmin) or 1.0
            for j, s in enumerate(series):
                ys = [i - group / 2 + bar_h * (j + 0.5) for i in range(len(labels))]
                vs = [row[j] for row in values]
                colour = PALETTE[j % (len(PALETTE) - 1)]
                ax.barh([y for y, v in zip(ys, vs) if v is not None], [v for v in vs if v is not None],
                        height=bar_h * 0.92, color=colour, label=s, zorder=2)
                if len(labels) * n_ser <= 60:  # value labels while they fit
                    for y, v in zip(ys, vs):
                        if v is None:
                            continue
                        text = f"{100 * v:.1f}%" if percent else f"{v:.3g}"
                        ax.text(v + (0.01 * span if v >= 0 else -0.01 * span), y, text, va="center",
                                ha="left" if v >= 0 else "right", fontsize=8.5, color="#333333")
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels)
            ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top
            ax.grid(True, axis="x")
            ax.grid(False, axis="y")
            right = vmax + 0.14 * span if vmax > 0 else 0.02 * span
            left = vmin - 0.14 * span if vmin < 0 else 0.0
            ax.set_xlim(left, right)
            if percent:
                ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            if value_label:
                ax.set_xlabel(value_label)
            if vmin < 0:
                ax.axvline(0, color="#555555", lw=0.8)
            # Legend in a row above the axes, under the title: it never covers a bar.
            ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=min(n_ser, 4), frameon=False,
                      borderaxespad=0.2, handlelength=1.4)
        if title:
            ax.set_title(title, loc="left", pad=26 if flat else 6)
        fig.tight_layout()
        return _to_uri(fig, path)
