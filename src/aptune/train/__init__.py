"""The APT training loop (one readable file: ``loop.py``)."""

from aptune.train.loop import train

__all__ = ["train"]
