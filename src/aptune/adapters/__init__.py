"""The APT adapter layer and its injection into a model."""

from aptune.adapters.layer import APTLinear

__all__ = ["APTLinear"]
