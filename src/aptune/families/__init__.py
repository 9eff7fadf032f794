"""Model families: the only code that knows module names. Importing this package registers them."""

from aptune.families import bert, llama, t5  # noqa: F401  (registration side effect)
from aptune.families.base import FAMILIES, AttentionSite, FFNSite, ModelFamily, family_for

__all__ = ["FAMILIES", "AttentionSite", "FFNSite", "ModelFamily", "family_for"]
