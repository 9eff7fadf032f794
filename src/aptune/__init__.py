"""aptune: Adaptive Pruning and Tuning of pretrained language models.

    from aptune import APT, APTConfig, APTModel
    model = APTModel.from_pretrained("minilm", num_labels=2)
    apt = APT(model, APTConfig(), total_steps=1000)   # APTConfig.paper(): with self-distillation, as the paper

The names below load on first use, so ``import aptune`` (and the command line) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "1.0.0"

_LAZY = {
    "APT": "aptune.method",
    "APTLoss": "aptune.method",
    "PruningEvent": "aptune.method",
    "APTModel": "aptune.model",
    "AdapterConfig": "aptune.model",
    "APTConfig": "aptune.config",
    "PruneConfig": "aptune.config",
    "RankConfig": "aptune.config",
    "RunConfig": "aptune.config",
    "load_config": "aptune.config",
    "DistillConfig": "aptune.distill.self_distill",
    "RecoveryConfig": "aptune.distill.recovery",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aptune' has no attribute {name!r}")
