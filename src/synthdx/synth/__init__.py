"""Synthetic data generators: labels known by construction, for users who have no data."""

from .hpo_patients import HPOPatientGenerator
from .radiology_reports import RadiologyReportGenerator

__all__ = ["HPOPatientGenerator", "RadiologyReportGenerator"]
