"""APT inside other people's training loops: :mod:`aptune.integrations.hf` for ``transformers.Trainer``."""

from aptune.integrations.hf import APTCallback, APTTrainer

__all__ = ["APTCallback", "APTTrainer"]
