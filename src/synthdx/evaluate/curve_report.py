"""The report of a learning-curve run: one plot and one table per learner and metric, the
equivalent number of real labelled examples, the data and split, and how the bands are made."""

from __future__ import annotations

from pathlib import Path

from .report import _num
from .sections import Plot, Section, slug, write_sectioned_report

METRIC_LABELS = {"micro_f1": "micro-F1", "macro_f1": "macro-F1"}

BAND_NOTE = ("Each point is the mean over training seeds (each seed draws other training records and "
             "trains from another initialisation); the band is a 95% percentile bootstrap over test "
             "records of that mean (every resample scores all seeds on the same records); dots are the "
             "single seeds.")


def _plot_points(points: list[dict], metric: str) -> list[dict]:
    """A curve's points in the form `plots.learning_curve_plot` takes, for one metric."""
    return [{"n": p["n"], **{k: p[metric][k] for k in ("mean", "lo", "hi", "per_seed")}} for p in points]


def _cell(d: dict) -> str:
    return f"{_num(d['mean'])} [{_num(d['lo'])}, {_num(d['hi'])}]"


def _equivalent(d: dict) -> str:
    eq = d.get("equivalent_real_n")
    if not eq:
        return ""
    return f"≈ {eq['n']:.0f}" if eq["n"] is not None else eq["note"]


def curve_sections(result: dict) -> list[Section]:
    from .plots import learning_curve_plot

    sizes = result["sizes"]
    sections = []
    refs = result.get("references", {})
    metric_labels = result.get("metric_labels") or METRIC_LABELS
    for metric, label in metric_labels.items():
        for learner, by_source in result["curves"].items():
            curves = {src: _plot_points(pts, metric) for src, pts in by_source.items()}
            references = {name: r[metric]["mean"] for name, r in refs.items()}
            title = f"{learner}: {label} on the real test part vs training records"
            plot = Plot(f"curve-{slug(learner)}-{metric}",
                        learning_curve_plot(curves, label, title, references=references), alt=title)
            header = ["source", "train records"] + [f"n={n}" for n in sizes]
            rows = []
            for src, pts in by_source.items():
                at = {p["n"]: p for p in pts}
                rows.append([src, "scores"] + [_cell(at[n][metric]) if n in at else "" for n in sizes])
                if any(_equivalent(p[metric]) for p in pts):
                    rows.append(["", "≈ real examples"] + [_equivalent(at[n][metric]) if n in at else ""
                                                           for n in sizes])
            notes = [f"{name}: {label} {_cell(r[metric])} (needs no training records)" for name, r in refs.items()]
            sections.append(Section(f"{learner} — {label}", header=header, rows=rows, plots=[plot],
                                    notes=notes))
    if len(result["curves"]) > 1:
        sections += _learner_comparison(result, refs)
    return sections


def _learner_comparison(result: dict, refs: dict) -> list[Section]:
    """One plot per data source with every learner's curve: which model to train at which N."""
    from .plots import learning_curve_plot

    sources = list(dict.fromkeys(src for by_source in result["curves"].values() for src in by_source))
    out = []
    for src in sources:
        plots = []
        for metric, label in (result.get("metric_labels") or METRIC_LABELS).items():
            curves = {learner: _plot_points(by_source[src], metric)
                      for learner, by_source in result["curves"].items() if src in by_source}
            title = f"{src}: {label} by learner"
            plots.append(Plot(f"learners-{slug(src)}-{metric}",
                              learning_curve_plot(curves, label, title,
                                                  references={n: r[metric]["mean"] for n, r in refs.items()}),
                              alt=title))
        out.append(Section(f"Learners compared: {src}", plots=plots))
    return out


def write_curve_report(out: Path, result: dict, extra_sections: list[Section] | None = None) -> dict[str, Path]:
    data = result["data"]
    intro = Section("What was run", text=result.get("intro") or (
        f"Task: {result['task']}. {data['records']} real records, {data['pool']} in the training pool, "
        f"{data['test']} in the test part ({data['split_rule']}; {data['records_in_duplicate_groups']} "
        f"records share a duplicate group). Every point is scored on the same real test part against "
        f"its curated labels. Sizes: {', '.join(map(str, result['sizes']))}; seeds: "
        f"{', '.join(map(str, result['seeds']))}."),
        notes=[BAND_NOTE, "≈ real examples: the number of real labelled training records at which the "
               "same learner's real-label curve reaches this score (interpolated in log n)."]
        + [f"skipped: {s}" for s in result.get("skipped_points", [])])
    sections = [intro] + curve_sections(result) + list(extra_sections or [])
    extra = {"data": data, "timings_seconds": result.get("timings_seconds", {})}
    return write_sectioned_report(out, result["title"], sections, result, extra)
