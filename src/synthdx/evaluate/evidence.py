"""The evidence sections of a multi-label report, beyond the headline table: paired tests of one
system against another, calibration and thresholds, synthetic-vs-real fidelity, and a few
misclassified test records."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .report import _num
from .sections import Plot, Section

__all__ = ["calibration_section", "error_examples", "fidelity_section", "mcnemar_section", "paired_section"]


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def signed(x: float) -> str:
    return f"{x:+.3f}"


def paired_section(comparisons: list[dict]) -> Section:
    """Rows: difference in micro- and macro-F1 with its paired-bootstrap CI and p-value, and how
    many labels McNemar finds different after Holm's adjustment."""
    header = ["A vs B", "metric", "A", "B", "A − B [95% CI]", "p (paired bootstrap)"]
    rows, notes = [], []
    for c in comparisons:
        for key, label in (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
            d = c[key]
            rows.append([f"{c['system_a']} vs {c['system_b']}" if key == "micro_f1" else "", label,
                         _num(d["a"]), _num(d["b"]), f"{signed(d['diff'])} [{signed(d['ci'][0])}, "
                         f"{signed(d['ci'][1])}]", p_text(d["p_value"])])
        sig = [x for x in c["per_label"] if x["p_holm"] < 0.05]
        better = sorted(x["label"] for x in sig if x["f1_a"] > x["f1_b"])
        worse = sorted(x["label"] for x in sig if x["f1_a"] < x["f1_b"])
        notes.append(f"{c['system_a']} vs {c['system_b']}, McNemar per label (Holm-adjusted p < 0.05): "
                     f"{c['system_a']} better on {', '.join(better) or 'none'}; worse on {', '.join(worse) or 'none'} "
                     f"(of {len(c['per_label'])} labels).")
    text = ("Both systems scored on the same test records: the interval is a percentile bootstrap of the "
            "difference over records resampled together, and the p-value that of 'no difference' from "
            "that bootstrap distribution centred on 0.")
    return Section("Paired comparisons", text=text, header=header, rows=rows, notes=notes)


def mcnemar_section(comparison: dict) -> Section:
    header = ["label", "support", f"F1 {comparison['system_a']}", f"F1 {comparison['system_b']}",
              "only A right", "only B right", "p (exact)", "p (Holm)"]
    rows = [[x["label"], str(x["support"]), _num(x["f1_a"]), _num(x["f1_b"]), str(x["b"]), str(x["c"]),
             p_text(x["p_value"]), p_text(x["p_holm"])] for x in comparison["per_label"]]
    return Section(f"Per label: {comparison['system_a']} vs {comparison['system_b']} (McNemar)",
                   text="Per record and label, is each system's yes/no decision right? The exact McNemar "
                        "test uses the records where only one system is right.", header=header, rows=rows)


def calibration_section(reliabilities: dict[str, dict], thresholds: dict[str, dict] | None = None) -> Section:
    """Reliability of each system's scores on the test part (all record x label pairs pooled),
    with ECE and Brier score, and the per-label thresholds tuned on the validation split."""
    from .plots import reliability_plot

    header = ["system", "ECE", "Brier", "pairs"]
    rows = [[name, _num(r["ece"]), _num(r["brier"]), str(r["n"])] for name, r in reliabilities.items()]
    plot_input = {name: {"confidence": r["mean_confidence"], "frequency": r["frequency"], "count": r["count"],
                         "ece": r["ece"]} for name, r in reliabilities.items()}
    plot = Plot("reliability", reliability_plot(plot_input), alt="reliability diagram")
    notes = []
    for name, t in (thresholds or {}).items():
        vals = ", ".join(f"{lab} {v:.2f}" for lab, v in t["thresholds"].items())
        fb = t.get("fallback_labels") or []
        notes.append(f"{name}: thresholds tuned on {t['n_validation']} validation reports ({t['source']}): {vals}"
                     + (f"; no positives in validation, kept 0.5: {', '.join(map(str, fb))}" if fb else ""))
    text = ("Scores vs how often the label is really present, over all (report, label) pairs of the test "
            "part; ECE = expected calibration error over 10 equal-width bins. Thresholds are tuned on the "
            "validation split only, never on the test part.")
    return Section("Calibration and thresholds", text=text, header=header, rows=rows, plots=[plot],
                   notes=notes, num_from=1)


def fidelity_section(report: dict, what: str) -> Section:
    """The fidelity table, with label prevalence (synthetic vs real) as a bar plot when both sets
    have labels."""
    from .fidelity import fidelity_table
    from .plots import bar_comparison_plot

    plots = []
    prev = report.get("prevalence") or {}
    if prev.get("synthetic") and prev.get("real"):
        rows = {name: {"synthetic": prev["synthetic"][name], "real": prev["real"][name]} for name in prev["names"]}
        plots.append(Plot("fidelity-prevalence", bar_comparison_plot(rows, "Label prevalence: synthetic vs real",
                                                                     value_label="share of records"),
                          alt="label prevalence, synthetic vs real"))
    return Section(f"Fidelity: {what}", header=["measure", "synthetic", "real"], rows=fidelity_table(report),
                   text="How close the synthetic records are to the real ones they stand in for. A classifier "
                        "two-sample AUC near 0.5 means a simple model cannot tell them apart.", num_from=1,
                   plots=plots)


def error_examples(ids: Sequence[str], texts: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray,
                   names: Sequence[str], k: int, include_text: bool, system: str) -> Section:
    """The first `k` misclassified test records (in test-part order), with the labels missed and the
    labels wrongly added; their text only when `include_text`."""
    wrong = np.flatnonzero((y_true != y_pred).any(1))[:k]
    header = ["record", "missed", "wrongly added"] + (["text"] if include_text else [])
    rows = []
    for i in wrong:
        missed = [names[j] for j in np.flatnonzero(y_true[i] & ~y_pred[i].astype(bool))]
        added = [names[j] for j in np.flatnonzero(y_pred[i] & ~y_true[i].astype(bool))]
        row = [ids[i], ", ".join(missed) or "—", ", ".join(added) or "—"]
        rows.append(row + ([texts[i]] if include_text else []))
    n_wrong = int((y_true != y_pred).any(1).sum())
    note = [] if include_text else ["Record text left out (eval.include_text is off)."]
    return Section(f"Error examples: {system}", text=f"{n_wrong} of {len(ids)} test records have at least one "
                   f"label wrong; the first {len(wrong)}:", header=header, rows=rows, notes=note, num_from=99)

