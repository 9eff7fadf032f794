"""aptune: Adaptive Pruning and Tuning of pretrained language models."""

__version__ = "0.1.0"
