"""Loading pretrained models by short name, local path or hub id."""

from aptune.models.loading import (DTYPES, SHORT_NAMES, check_max_length, load_model, load_tokenizer, max_positions,
                                   resolve_device, resolve_dtype, resolve_model_source, untrained_head)

__all__ = ["DTYPES", "SHORT_NAMES", "check_max_length", "load_model", "load_tokenizer", "max_positions",
           "resolve_device", "resolve_dtype", "resolve_model_source", "untrained_head"]
