"""Classical baselines."""

from .tfidf import TfidfLogRegBaseline

__all__ = ["TfidfLogRegBaseline"]
