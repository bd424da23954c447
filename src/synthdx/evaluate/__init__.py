"""Evaluation of multi-label classifiers: scores, bootstrap intervals, and reports."""

from .bootstrap import bootstrap_ci, evaluate_system, label_f1, macro_f1, micro_f1
from .metrics import multi_hot, multilabel_scores
from .report import format_table, write_report

__all__ = [
    "bootstrap_ci",
    "evaluate_system",
    "format_table",
    "label_f1",
    "macro_f1",
    "micro_f1",
    "multi_hot",
    "multilabel_scores",
    "write_report",
]
