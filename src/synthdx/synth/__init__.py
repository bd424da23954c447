"""Synthetic data generators: labels known by construction, for users who have no data."""

from .radiology_reports import RadiologyReportGenerator

__all__ = ["RadiologyReportGenerator"]
