"""Loading pretrained models by short name, local path or hub id."""

from aptune.models.loading import SHORT_NAMES, load_model, load_tokenizer, resolve_model_source, untrained_head

__all__ = ["SHORT_NAMES", "load_model", "load_tokenizer", "resolve_model_source", "untrained_head"]
