"""Peers: another tool's method run in APT's place by that tool's own code, so that a comparison with APT is a
comparison with the tool a practitioner would otherwise use (``peer.method``; ``results/peers``).

aptune supplies the data, the loop, the evaluation and the export; the peer supplies the adapters and every decision
they make. :func:`train_peer` writes the same run folder as :func:`aptune.train.train` (``config.yaml``,
``metrics.jsonl``, ``summary.json``, ``export/``), so ``aptune ablate`` and its report treat a peer's run as any other.

* ``adalora``: PEFT's AdaLoRA (adaptive ranks by SVD-style importance, the peer of APT's adaptive tuning) on the
  dense model, on the adapter targets of the run, its final rank budget ``rank.budget_ratio x adapter.rank`` per
  module (what APT's rank growth reaches on the dense model), its rank reduction over APT's pruning window.
* ``torchpruning_magnitude``, ``torchpruning_taylor``: Torch-Pruning's one cut before tuning to ``prune.density`` of
  APT's parameter count, by group weight norm or by Taylor importance from calibration batches (LLM-Pruner's
  recipe), then PEFT's LoRA for the run's steps.
"""

from aptune.peers.loop import train_peer

__all__ = ["train_peer"]
