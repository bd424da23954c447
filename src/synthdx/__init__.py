"""synthdx: train small clinical language models on synthetic data, prove them on real data."""

__version__ = "0.1.0"
