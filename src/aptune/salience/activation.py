"""APT's outlier-aware activation salience (docs/method.md §C, pitfall J3).

Per channel c of an observed activation H (i over batch and tokens):

    S̃_c = (Σ_i |H_{c,i}|) · (Σ_i |∂L/∂H_{c,i}|)

a product of two *separately* summed totals, so only two vectors per layer are kept, never a
weight-sized buffer. Observed activations, one forward hook per o and down projection:

* heads: the o-projection *input* (per-head context, after the head mask), summed over the
  ``group_size·head_dim`` channels of each KV group;
* neurons: the down-projection input (the FFN activations);
* hidden dimensions: the o and down *outputs* (what enters the residual stream), summed over all sites,
  or, for families whose ``hidden_salience_sites`` is "stream" (post-LN encoders), the outputs of every
  hidden-size norm, i.e. the residual stream itself, as the official BERT/RoBERTa scorer does.

With a channel mask m ≥ 0 between the observed tensor and the rest of the network, (Σ|m·a|)(Σ|g|) equals
(Σ|a|)(Σ|m·g|), so it does not matter whether the hook sees a tensor before or after a mask.

Optional outlier term (``kurtosis``): with x̄ the mean over batch and tokens of the o/down input and
O = W_eff ⊙ x̄ (O_{p,j} = W_eff[p,j]·x̄_j, W_eff = W + s·B·A), add sqrt(max(Kurt,0)) of

* column O[:, j] (over outputs) to neuron j,
* the group's own entries O[:, channels of g] to KV group g (not the official code's reshape bug, J2),
* row O[p, :] to hidden dimension p, summed over every o and down projection.

Only forwards whose activations are later back-propagated count: sums are committed from the tensor's
gradient hook, so no-grad teacher passes and evaluation passes leave the scores alone.
"""

from __future__ import annotations

import warnings

import torch

from aptune.salience.base import BETA, channel_groups, effective_weight, masked_flat, outlier_term, try_module
from aptune.salience.capture import ObservingSalience


class APTSalience(ObservingSalience):
    """Activation × gradient salience with optional kurtosis term, EMA-smoothed.

    Args:
        beta: EMA factor (0.85).
        kurtosis: add the outlier term; None = the official choice (on for decoder-only LLaMA-style
            families, off for encoders and T5; docs/design.md: on by default for decoders).
        exclude_padding: leave padding tokens out of the sums when the batch has an attention mask.
    """

    name = "apt"

    def __init__(self, beta: float = BETA, kurtosis: bool | None = None, exclude_padding: bool = True):
        super().__init__(beta, exclude_padding)
        self.kurtosis = kurtosis
        self._pending: dict[str, dict[str, torch.Tensor]] = {}

    # ---------------------------------------------------------------------------------- hooks
    def attach(self, apt_model) -> "APTSalience":
        super().attach(apt_model)
        if self.kurtosis is None:
            self.kurtosis = self.family.name == "llama"
        return self

    def add_observers(self, model) -> None:
        # prepend: see the projection's own output, before the hidden-mask hook rescales it
        for site in self.family.attention_sites:
            self.observe(model.get_submodule(site.o), self._observer(("heads", site.name), site.stack), prepend=True)
        for site in self.family.ffn_sites:
            self.observe(model.get_submodule(site.down), self._observer(("ffn", site.name), site.stack), prepend=True)
        if self.family.hidden_salience_sites == "stream":
            for path in self.family.hidden.norms + self.family.hidden.extra_norms:
                self.observe(model.get_submodule(path), self._stream_observer(path), prepend=False)

    def _stream_observer(self, path: str):
        def hook(module, args, output):
            if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.is_floating_point():
                if not output.requires_grad and output.grad_fn is None:
                    # the embedding norm sits above every trainable weight: ask autograd for its gradient too
                    output.requires_grad_(True)
                mask = self.token_mask("", output)
                act = masked_flat(output, mask).abs().sum(0)
                output.register_hook(self._committer(("stream", path), "out", act, mask))
            return None

        return hook

    def _observer(self, key: tuple[str, str], stack: str):
        def hook(module, args, output):
            if not torch.is_grad_enabled() or not args:
                return None
            x = args[0]
            if x.requires_grad and x.shape[-1] > 0:
                mask = self.token_mask(stack, x)
                flat = masked_flat(x, mask)
                act, xsum = flat.abs().sum(0), flat.sum(0)
                count = torch.tensor(float(flat.shape[0] if mask is None else mask.sum()))
                x.register_hook(self._committer(key, "in", act, mask, xsum, count))
            if isinstance(output, torch.Tensor) and output.requires_grad and output.shape[-1] > 0:
                mask = self.token_mask(stack, output)
                act = masked_flat(output, mask).abs().sum(0)
                output.register_hook(self._committer(key, "out", act, mask))
            return None

        return hook

    def _committer(self, key, side, act, mask, xsum=None, count=None):
        name = f"{key[0]}/{key[1]}/{side}"

        def on_grad(grad):
            grad_sum = masked_flat(grad, mask).abs().sum(0)
            pending = self._pending.get(name)
            if pending is None or pending["act"].shape != act.shape:
                pending = self._pending[name] = {"act": torch.zeros_like(act), "grad": torch.zeros_like(act)}
                if xsum is not None:
                    pending["xsum"], pending["count"] = torch.zeros_like(xsum), torch.zeros(())
            pending["act"] += act
            pending["grad"] += grad_sum
            if xsum is not None:
                pending["xsum"] += xsum
                pending["count"] += count
            return None  # observe only

        return on_grad

    def clear_pending(self) -> None:
        self._pending = {}

    # --------------------------------------------------------------------------------- scores
    def step_scores(self) -> dict | None:
        if not self._pending:
            return None
        pending, self._pending = self._pending, {}
        state, model = self.state, self.apt.model
        stream = self.family.hidden_salience_sites == "stream"
        out = {"heads": {}, "ffn": {}, "hidden": torch.zeros(len(state.hidden))}
        for site in self.family.attention_sites:
            groups = len(state.heads[site.name])
            score = torch.zeros(groups)
            inp = pending.get(f"heads/{site.name}/in")
            if inp is not None and _fits(inp["act"], groups * site.group_size * site.head_dim, site.name):
                score += channel_groups((inp["act"] * inp["grad"]).cpu(), groups)
                if self.kurtosis:
                    contrib = _contribution(model, site.o, inp)
                    if contrib is not None and groups > 0:
                        # each KV group's own entries: O[:, channels of g] (d_out × group width)
                        per_group = contrib.reshape(contrib.shape[0], groups, -1).permute(1, 0, 2).reshape(groups, -1)
                        score += outlier_term(per_group, 1).float().cpu()
                        out["hidden"] += _hidden_outliers(contrib, len(state.hidden))
            out["heads"][site.name] = score
            if not stream:
                out["hidden"] += _hidden_score(pending.get(f"heads/{site.name}/out"), len(state.hidden))
        for site in self.family.ffn_sites:
            neurons = len(state.ffn[site.name])
            score = torch.zeros(neurons)
            inp = pending.get(f"ffn/{site.name}/in")
            if inp is not None and _fits(inp["act"], neurons, site.name):
                score += (inp["act"] * inp["grad"]).cpu()
                if self.kurtosis:
                    contrib = _contribution(model, site.down, inp)
                    if contrib is not None:
                        score += outlier_term(contrib, 0).float().cpu()  # column j over the outputs
                        out["hidden"] += _hidden_outliers(contrib, len(state.hidden))
            out["ffn"][site.name] = score
            if not stream:
                out["hidden"] += _hidden_score(pending.get(f"ffn/{site.name}/out"), len(state.hidden))
        if stream:
            for path in self.family.hidden.norms + self.family.hidden.extra_norms:
                out["hidden"] += _hidden_score(pending.get(f"stream/{path}/out"), len(state.hidden))
        return out


def _fits(values: torch.Tensor, expected: int, site: str) -> bool:
    if values.shape[0] == expected:
        return True
    warnings.warn(f"salience of {site}: observed {values.shape[0]} channels, the structure has {expected}; "
                  "was the model cut between backward and update()? This step is skipped for that site.")
    return False


def _hidden_score(pending: dict | None, size: int) -> torch.Tensor:
    if pending is None or pending["act"].shape[0] != size:
        return torch.zeros(size)
    return (pending["act"] * pending["grad"]).cpu()


def _contribution(model, path: str, pending: dict) -> torch.Tensor | None:
    """O = W_eff ⊙ x̄ for the projection at ``path`` (d_out × d_in), x̄ the mean input of the step."""
    module = try_module(model, path)
    if module is None or float(pending["count"]) <= 0:
        return None
    weight = effective_weight(module)
    mean = (pending["xsum"] / pending["count"]).to(weight.device)
    if weight.shape[1] != mean.shape[0] or weight.shape[0] == 0:
        return None
    return weight * mean[None, :]


def _hidden_outliers(contrib: torch.Tensor, size: int) -> torch.Tensor:
    """sqrt-kurtosis of each row O[p, :] (hidden dimension p, over this projection's inputs)."""
    if contrib.shape[0] != size:
        return torch.zeros(size)
    return outlier_term(contrib, 1).float().cpu()
