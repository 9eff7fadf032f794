"""Next-token cross-entropy that keeps a low-precision model's logits as they are.

transformers' causal-LM loss casts all the logits to float32 and autograd keeps the float32 log-softmax for
backward: at SmolLM2's 49,152-token vocabulary and 4 x 256 tokens that is 192 MiB, a third of a bfloat16
training step's activations. :func:`causal_lm_loss` computes the same loss (mean over the labelled tokens,
labels shifted by one, -100 ignored) in float32 a chunk of positions at a time, keeps only the logits in their
own dtype for backward (half the bytes in bfloat16), and recomputes each chunk's softmax in backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """What a causal LM's logits at each position predict: the labels shifted left (no copy of the logits is
    needed), -100 at the last position, which predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = 1024,
                   num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (batch, seq, vocab) predicting ``labels`` (batch, seq) one position
    ahead, over the positions whose label is not -100 (0 when there are none); with ``num_items_in_batch`` (what
    ``transformers.Trainer`` passes under gradient accumulation) the sum divided by it instead, as transformers
    does."""
    targets = next_token_targets(labels).reshape(-1).to(logits.device)
    total = _ChunkedCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets, chunk_tokens)
    if num_items_in_batch is not None:
        return total / num_items_in_batch
    return total / (targets != IGNORE).sum().clamp(min=1)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Summed float32 cross-entropy of (tokens, vocab) logits; saves the logits alone for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk):
            total += F.cross_entropy(logits[start:start + chunk].float(), targets[start:start + chunk],
                                     ignore_index=IGNORE, reduction="sum")
        ctx.save_for_backward(logits, targets)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        logits, targets = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            part, wanted = logits[start:start + ctx.chunk].float(), targets[start:start + ctx.chunk]
            labelled = wanted != IGNORE
            g = part.softmax(dim=-1)  # d(-log softmax[y]) / d logits = softmax - one_hot(y)
            g[labelled, wanted[labelled]] -= 1.0
            g[~labelled] = 0.0
            grad[start:start + ctx.chunk] = (g * grad_total).to(logits.dtype)
        return grad, None, None
