"""Medical knowledge that synthetic data and knowledge-based baselines are built from."""

from .hpo import HPOKnowledge, HPOntology, load_hpo, parse_frequency

__all__ = ["HPOKnowledge", "HPOntology", "load_hpo", "parse_frequency"]
