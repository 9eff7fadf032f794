"""Multiple-choice evaluation of a causal LM by log-likelihood (acc and acc_norm, zero- and k-shot).

API (works on any in-memory causal LM, pruned or not)::

    from aptune.data.multiple_choice import load_arc
    arc = load_arc("easy", "dev")
    result = evaluate_multiple_choice(model, tokenizer, arc.items, batch_size=8, num_fewshot=0)
    result["acc"], result["acc_norm"], result["n"]

For each item the model scores every choice as a continuation of the prompt: the log-likelihood is
the sum of the log-probabilities of the continuation's tokens (``target_delimiter + choice``, i.e.
``" " + choice``) given the prompt. Then, as in lm-evaluation-harness:

* ``acc``: the choice with the highest log-likelihood is right;
* ``acc_norm``: the choice with the highest log-likelihood divided by its length in characters (the
  length of the choice text, without the delimiter) is right. This removes the bias towards short
  answers that a sum of log-probabilities has (lm-eval calls this byte-length normalisation; it counts
  characters of the string). With single-letter choices acc_norm equals acc.

Tokenization follows lm-eval: trailing whitespace of the prompt moves into the continuation, the
continuation's tokens are those of ``encode(prompt + continuation)`` after ``encode(prompt)``, and
a BOS token is prepended only when the tokenizer adds one itself. Prompts longer than ``max_length``
lose their beginning.

Efficiency: the prompt is shared by all choices of an item, so it runs through the model once; its
key/value cache is then copied to one row per choice and only the continuation tokens run again
(``share_context=True``); continuations are grouped by length so that one long option does not pad
the others. Items are sorted by length so batches carry little padding. Models whose
forward returns no reusable cache fall back to scoring full sequences.

k-shot prompts put the item's ``description``, then ``k`` solved examples (``context + " " + answer``,
separated by blank lines), then the question. Examples come from ``fewshot_pool`` (same ``group``,
e.g. MMLU subject, when possible) or else from the other items, drawn with a seed derived from
``seed`` and the item's id, so an item's prompt does not depend on the order or subset evaluated.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aptune.data.multiple_choice import MCDataset, MCItem

DEFAULT_MAX_LENGTH = 2048


# ------------------------------------------------------------------------------------------ prompts


def sample_fewshot(item: MCItem, pool: Sequence[MCItem], num_fewshot: int, seed: int = 1234) -> list[MCItem]:
    """``num_fewshot`` examples for ``item`` from ``pool``, never the item itself, same group preferred."""
    if num_fewshot <= 0:
        return []
    candidates = [other for other in pool if other != item]
    same_group = [other for other in candidates if item.group and other.group == item.group]
    if len(same_group) >= num_fewshot:
        candidates = same_group
    if len(candidates) < num_fewshot:
        raise ValueError(f"{num_fewshot}-shot needs {num_fewshot} other items, the pool has {len(candidates)}")
    rng = random.Random(f"{seed}:{item.id}:{item.context}")
    return rng.sample(candidates, num_fewshot)


def build_prompt(item: MCItem, shots: Sequence[MCItem] = ()) -> str:
    """Description, solved examples separated by blank lines, then the item's context."""
    examples = "".join(f"{shot.context}{shot.target_delimiter}{shot.choices[shot.answer]}\n\n" for shot in shots)
    return f"{item.description}{examples}{item.context}"


# ------------------------------------------------------------------------------------- tokenization


@dataclass
class _Encoded:
    """An item's prompt tokens and its choices' continuation tokens."""

    context: list[int]
    continuations: list[list[int]]


def _encode(
    tokenizer, prompts: Sequence[str], continuations: Sequence[Sequence[str]], max_length: int
) -> list[_Encoded]:
    adds_bos = getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None
    bos = [tokenizer.bos_token_id] if adds_bos else []
    contexts, full_continuations = [], []
    for prompt, conts in zip(prompts, continuations):
        # Trailing spaces belong to the continuation: "Answer:" + " Paris" tokenizes like the model's
        # training text, "Answer: " + "Paris" does not.
        stripped = prompt.rstrip(" ")
        contexts.append(stripped)
        full_continuations.append([prompt[len(stripped) :] + cont for cont in conts])
    context_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    wholes = [context + cont for context, conts in zip(contexts, full_continuations) for cont in conts]
    whole_ids = iter(tokenizer(wholes, add_special_tokens=False)["input_ids"] if wholes else [])
    encoded = []
    for ctx, conts in zip(context_ids, full_continuations):
        cont_ids = []
        for cont in conts:
            ids = next(whole_ids)
            if ids[: len(ctx)] == ctx and len(ids) > len(ctx):
                cont_ids.append(ids[len(ctx) :])
            else:  # the tokenizer merged across the boundary: tokenize the continuation on its own
                cont_ids.append(tokenizer(cont, add_special_tokens=False)["input_ids"])
        if any(not ids for ids in cont_ids):
            raise ValueError("a choice tokenizes to no tokens; every choice must be a non-empty string")
        context = bos + list(ctx)
        if not context:  # nothing to condition on: start from EOS, as lm-eval does
            context = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
        longest = max(len(ids) for ids in cont_ids)
        keep = max(1, max_length - longest + 1)
        encoded.append(_Encoded(context[-keep:], cont_ids))
    return encoded


# -------------------------------------------------------------------------------------------- model


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_arguments(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _cache_argument(arguments: set[str]) -> str:
    """The forward argument that takes a key/value cache: ``cache`` in recent transformers, else
    ``past_key_values``; for a wrapper whose signature says neither, ask transformers' output class."""
    for name in ("cache", "past_key_values"):
        if name in arguments:
            return name
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _select_rows(cache, rows: torch.Tensor):
    """A cache holding the prompt keys/values of ``rows`` (repeats allowed), leaving ``cache`` intact.

    ``reorder_cache`` replaces each layer's tensors by an indexed copy, so shallow copies of the layer
    objects are enough to keep the original; caches without ``layers`` are deep-copied instead.
    """
    if hasattr(cache, "layers"):
        selected = copy.copy(cache)
        selected.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        selected = copy.deepcopy(cache)
    selected.reorder_cache(rows)
    return selected


def _model_max_length(model, tokenizer) -> int:
    limits = [DEFAULT_MAX_LENGTH]
    for value in (getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    return min(limits)


class _Scorer:
    """Computes continuation log-likelihoods for batches of items on one model."""

    def __init__(self, model, pad_token_id: int, share_context: bool):
        self.model = model
        self.device = _model_device(model)
        self.pad_token_id = pad_token_id
        arguments = _forward_arguments(model)
        self.takes_position_ids = "position_ids" in arguments
        self.logits_to_keep_arg = next(
            (name for name in ("logits_to_keep", "num_logits_to_keep") if name in arguments), None
        )
        self.cache_argument = _cache_argument(arguments)
        self.share_context = share_context

    def _call(self, keep: int | None = None, **inputs) -> Any:
        if not self.takes_position_ids:
            inputs.pop("position_ids", None)
        if keep is not None and self.logits_to_keep_arg:
            inputs[self.logits_to_keep_arg] = keep
        return self.model(**inputs)

    def score(self, batch: Sequence[_Encoded]) -> list[list[float]]:
        if self.share_context:
            scores = self._score_shared(batch)
            if scores is not None:
                return scores
            self.share_context = False  # this model returns no reusable cache; do not try again
        return self._score_full(batch)

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        longest = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, longest - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            mask[row, longest - len(sequence) :] = 1
        # Positions count real tokens only, so a left-padded row sees the same positions as an unpadded one.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _score_shared(self, batch: Sequence[_Encoded]) -> list[list[float]] | None:
        input_ids, mask, positions = self._left_pad([item.context for item in batch])
        needs_rest = any(len(cont) > 1 for item in batch for cont in item.continuations)
        outputs = self._call(keep=1, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=needs_rest)
        last = F.log_softmax(outputs.logits[:, -1, :].float(), dim=-1)
        scores = [[float(last[row, cont[0]]) for cont in item.continuations] for row, item in enumerate(batch)]
        if not needs_rest:
            return scores
        cache = getattr(outputs, self.cache_argument, None)
        if cache is None or not hasattr(cache, "reorder_cache"):
            return None
        rows = [(row, choice) for row, item in enumerate(batch) for choice, cont in enumerate(item.continuations)
                if len(cont) > 1]
        # Continuations of similar length go together: one long option would otherwise pad every row.
        rows.sort(key=lambda rc: -len(batch[rc[0]].continuations[rc[1]]))
        chunk_size = len(batch)
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            self._score_continuations(batch, chunk, cache, mask, scores)
        return scores

    def _score_continuations(self, batch, rows, cache, mask, scores) -> None:
        """Add the log-probabilities of continuation tokens 2.. of ``rows`` given the cached prompts."""
        # Feed every continuation token but the last; the prediction of token t+1 comes from token t.
        feeds = [batch[row].continuations[choice][:-1] for row, choice in rows]
        width = max(len(feed) for feed in feeds)
        feed_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        feed_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, feed in enumerate(feeds):
            feed_ids[index, : len(feed)] = torch.tensor(feed, dtype=torch.long)
            feed_mask[index, : len(feed)] = 1
        owners = torch.tensor([row for row, _ in rows], dtype=torch.long, device=self.device)
        context_lengths = mask.sum(dim=1)[owners]
        feed_positions = context_lengths[:, None] + torch.arange(width, device=self.device)[None, :]
        outputs = self._call(
            input_ids=feed_ids.to(self.device),
            attention_mask=torch.cat([mask[owners], feed_mask.to(self.device)], dim=1),
            position_ids=feed_positions,
            use_cache=True,
            **{self.cache_argument: _select_rows(cache, owners)},
        )
        logprobs = F.log_softmax(outputs.logits.float(), dim=-1)
        for index, (row, choice) in enumerate(rows):
            targets = torch.tensor(batch[row].continuations[choice][1:], dtype=torch.long, device=self.device)
            taken = logprobs[index, : targets.numel()].gather(-1, targets[:, None]).sum()
            scores[row][choice] += float(taken)

    def _score_full(self, batch: Sequence[_Encoded]) -> list[list[float]]:
        sequences, owners = [], []
        for row, item in enumerate(batch):
            for choice, cont in enumerate(item.continuations):
                sequences.append((item.context + cont)[:-1])
                owners.append((row, choice, cont))
        input_ids, mask, positions = self._left_pad(sequences)
        longest_cont = max(len(cont) for _, _, cont in owners)
        outputs = self._call(keep=longest_cont, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=False)
        logprobs = F.log_softmax(outputs.logits[:, -longest_cont:, :].float(), dim=-1)
        scores = [[0.0] * len(item.continuations) for item in batch]
        for index, (row, choice, cont) in enumerate(owners):
            targets = torch.tensor(cont, dtype=torch.long, device=self.device)
            scores[row][choice] = float(logprobs[index, -len(cont) :].gather(-1, targets[:, None]).sum())
        return scores


def choice_loglikelihoods(
    model,
    tokenizer,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    share_context: bool = True,
    description: str = "scoring",
) -> list[list[float]]:
    """Log-likelihood of each continuation given its prompt.

    Args:
        model: a causal LM (``transformers`` ``*ForCausalLM`` or anything with the same forward).
        tokenizer: its tokenizer.
        prompts: one prompt per item.
        choices: the continuations of each item, with their leading delimiter (``" Paris"``).
        batch_size: items per forward pass (all of an item's choices go in the same pass).
        max_length: longest sequence fed to the model (default: the model's limit, at most 2048).
        progress: show a tqdm progress bar.
        share_context: run each prompt once and reuse its key/value cache for the choices.
        description: progress bar label.

    Returns:
        ``scores[i][j]``: summed log-probability of ``choices[i][j]``'s tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length or _model_max_length(model, tokenizer)
    encoded = _encode(tokenizer, prompts, choices, max_length)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    scorer = _Scorer(model, pad_token_id, share_context)
    # Longest first: similar lengths share a batch, and a too-large batch fails at once, not at the end.
    order = sorted(
        range(len(encoded)), key=lambda i: -(len(encoded[i].context) + max(map(len, encoded[i].continuations)))
    )
    scores: list[list[float]] = [[] for _ in encoded]
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(encoded), desc=description, disable=not progress, unit="item")
        with torch.inference_mode(), bar:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                for index, item_scores in zip(indices, scorer.score([encoded[i] for i in indices])):
                    scores[index] = item_scores
                bar.update(len(indices))
    finally:
        model.train(was_training)
    return scores


# ------------------------------------------------------------------------------------------ metrics


def _stderr(correct: np.ndarray) -> float:
    """Standard error of a mean of 0/1 outcomes (sample standard deviation over sqrt(n), as lm-eval)."""
    n = correct.size
    return float(np.std(correct, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def score_predictions(items: Sequence[MCItem], loglikelihoods: Sequence[Sequence[float]]) -> dict[str, Any]:
    """acc, acc_norm, their standard errors, n and chance level from per-choice log-likelihoods.

    Also ``predicted_positions``: how often each choice position (0 = first) wins under ``acc``; a
    model that always picks the same position (small models scoring MMLU letters) shows at once.
    """
    correct, correct_norm = [], []
    positions: list[int] = []
    for item, scores in zip(items, loglikelihoods):
        scores = np.asarray(scores, dtype=np.float64)
        lengths = np.asarray([max(1, len(choice)) for choice in item.choices], dtype=np.float64)
        predicted = int(np.argmax(scores))
        positions.append(predicted)
        correct.append(predicted == item.answer)
        correct_norm.append(int(np.argmax(scores / lengths)) == item.answer)
    most_choices = max((len(item.choices) for item in items), default=0)
    correct_array = np.asarray(correct, dtype=np.float64)
    norm_array = np.asarray(correct_norm, dtype=np.float64)
    return {
        "acc": float(correct_array.mean()) if items else float("nan"),
        "acc_norm": float(norm_array.mean()) if items else float("nan"),
        "acc_stderr": _stderr(correct_array),
        "acc_norm_stderr": _stderr(norm_array),
        "n": len(items),
        "chance": float(np.mean([1.0 / len(item.choices) for item in items])) if items else float("nan"),
        "predicted_positions": np.bincount(positions, minlength=most_choices).tolist(),
    }


def _refuse_empty_choices(items: Sequence[MCItem]) -> None:
    """An empty choice would be scored as the bare delimiter (a space), which can win; no data set means that."""
    for item in items:
        empty = [number for number, choice in enumerate(item.choices) if not choice.strip()]
        if empty:
            raise ValueError(f"item {item.id or item.context[:40]!r}: choice {empty[0]} is empty; every choice needs "
                             "text (an empty one is scored as a bare space and can win)")


def evaluate_multiple_choice(
    model,
    tokenizer,
    items: Sequence[MCItem] | MCDataset,
    batch_size: int = 8,
    num_fewshot: int = 0,
    progress: bool = True,
    fewshot_pool: Sequence[MCItem] | None = None,
    seed: int = 1234,
    max_length: int | None = None,
    share_context: bool = True,
    return_details: bool = False,
) -> dict[str, Any]:
    """Evaluate a causal LM on multiple-choice items.

    Args:
        model: an in-memory causal LM (pruned, adapted or stock).
        tokenizer: its tokenizer.
        items: :class:`MCItem` list or an :class:`MCDataset` (whose ``fewshot_pool`` is then used).
        batch_size: items per forward pass.
        num_fewshot: solved examples placed before each question.
        progress: show a progress bar.
        fewshot_pool: where examples come from; default the dataset's pool, else the other items.
        seed: seed of the example draw.
        max_length: longest sequence fed to the model.
        share_context: reuse the prompt's key/value cache across choices (faster; same numbers).
        return_details: add ``details``: per item id, answer, predictions and log-likelihoods.

    Returns:
        ``{"acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n", "chance", "num_fewshot"}``, plus
        ``groups`` (the same per group) when items belong to several groups (MMLU subjects).
    """
    label = "multiple choice"
    if isinstance(items, MCDataset):
        fewshot_pool = fewshot_pool if fewshot_pool is not None else items.fewshot_pool
        label = items.name
        items = items.items
    items = list(items)
    if not items:
        raise ValueError("no items to evaluate")
    _refuse_empty_choices(items)
    pool = list(fewshot_pool) if fewshot_pool is not None else items
    prompts = [build_prompt(item, sample_fewshot(item, pool, num_fewshot, seed)) for item in items]
    continuations = [[item.target_delimiter + choice for choice in item.choices] for item in items]
    loglikelihoods = choice_loglikelihoods(
        model, tokenizer, prompts, continuations, batch_size=batch_size, max_length=max_length,
        progress=progress, share_context=share_context, description=label,
    )
    result = score_predictions(items, loglikelihoods)
    result["num_fewshot"] = num_fewshot
    groups = sorted({item.group for item in items if item.group})
    if len(groups) > 1:
        result["groups"] = {}
        for group in groups:
            members = [i for i, item in enumerate(items) if item.group == group]
            scored = score_predictions([items[i] for i in members], [loglikelihoods[i] for i in members])
            result["groups"][group] = {key: scored[key] for key in ("acc", "acc_norm", "n")}
    if return_details:
        result["details"] = [
            {
                "id": item.id,
                "answer": item.answer,
                "prediction": int(np.argmax(scores)),
                "prediction_norm": int(np.argmax(np.asarray(scores) / [max(1, len(c)) for c in item.choices])),
                "loglikelihoods": list(scores),
            }
            for item, scores in zip(items, loglikelihoods)
        ]
    return result
