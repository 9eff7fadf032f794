"""Salience scorers: hand computations, invariance of the model, following physical cuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, randomize_adapters, random_binary_masks, tiny_inputs

from aptune.model import APTModel
from aptune.salience import SCORERS, AdapterImportance, build_scorer, ema_update, kurtosis, outlier_term
from aptune.salience.base import aggregate_blocks, effective_weight, site_linears


def make(kind, seed=0):
    apt = APTModel(TINY[kind](), seed=seed)
    randomize_adapters(apt)
    return apt


def loss_of(apt, inputs):
    return apt(**inputs).logits.float().pow(2).mean()


# ----------------------------------------------------------------------------------- EMA, kurtosis


def test_ema_matches_hand_computation():
    s = torch.zeros(3)
    values = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])]
    for v in values:
        s = ema_update(s, v)
    expected = 0.85 * (0.15 * values[0]) + 0.15 * values[1]
    assert torch.allclose(s, expected)


def test_kurtosis_matches_hand_computation():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    z = (x - x.mean()) / x.std(ddof=1)
    expected = (z**4).mean() - 3.0
    assert kurtosis(torch.tensor(x)).item() == pytest.approx(expected, rel=1e-9)
    # rows of a matrix, and a constant row (std 0): z = 0, kurtosis −3, outlier term 0
    rows = torch.tensor([x.tolist(), [5.0] * 5])
    assert torch.allclose(kurtosis(rows, 1), torch.tensor([expected, -3.0], dtype=torch.float64))
    assert outlier_term(rows, 1)[1].item() == 0.0
    assert outlier_term(rows, 1)[0].item() == pytest.approx(max(expected, 0) ** 0.5)


def test_kurtosis_of_gaussian_is_zero_and_heavy_tails_are_positive():
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(200_000, generator=g, dtype=torch.float64)
    assert abs(kurtosis(gaussian).item()) < 0.1
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((200_000,)).double()  # excess kurtosis 3
    assert 2.5 < kurtosis(laplace).item() < 3.5


# -------------------------------------------------------------------------- APT salience by hand


def _capture(apt):
    """Test-side hooks keeping the o/down inputs and outputs with their gradients."""
    seen, handles = {}, []
    fam = apt.family
    for path in [s.o for s in fam.attention_sites] + [s.down for s in fam.ffn_sites]:
        def hook(module, args, output, path=path):
            args[0].retain_grad()
            output.retain_grad()
            seen[path] = (args[0], output)
        handles.append(apt.model.get_submodule(path).register_forward_hook(hook))
    return seen, handles


def _hand_scores(apt, seen, mask):
    """S̃ per block from retained activations and their gradients, padding excluded."""
    m = mask.float()[..., None]
    fam, state = apt.family, apt.state

    def prod(t):
        return ((t.detach() * m).abs().sum((0, 1)) * (t.grad * m).abs().sum((0, 1)))

    heads = {s.name: prod(seen[s.o][0]).reshape(len(state.heads[s.name]), -1).sum(1) for s in fam.attention_sites}
    ffn = {s.name: prod(seen[s.down][0]) for s in fam.ffn_sites}
    hidden = sum(prod(seen[p][1]) for p in [s.o for s in fam.attention_sites] + [s.down for s in fam.ffn_sites])
    return heads, ffn, hidden


def test_apt_salience_ema_matches_hand_computation():
    apt = make("llama")
    scorer = build_scorer("apt", kurtosis=False).attach(apt)
    seen, handles = _capture(apt)
    hand = []
    for seed in (0, 1):
        inputs = tiny_inputs("llama", seed=seed)
        apt.zero_grad()
        loss_of(apt, inputs).backward()
        scorer.update()
        hand.append(_hand_scores(apt, seen, inputs["attention_mask"]))
    for h in handles:
        h.remove()
    got = scorer.scores()
    (h1, f1, d1), (h2, f2, d2) = hand
    for name in h1:
        assert torch.allclose(got["heads"][name], 0.85 * 0.15 * h1[name] + 0.15 * h2[name], rtol=1e-4)
    for name in f1:
        assert torch.allclose(got["ffn"][name], 0.85 * 0.15 * f1[name] + 0.15 * f2[name], rtol=1e-4)
    assert torch.allclose(got["hidden"], 0.85 * 0.15 * d1 + 0.15 * d2, rtol=1e-4)
    assert got["hidden"].abs().sum() > 0


def test_kurtosis_term_matches_hand_computation():
    apt = make("llama")
    plain = build_scorer("apt", kurtosis=False).attach(apt)
    outlier = build_scorer("apt", kurtosis=True).attach(apt)
    seen, handles = _capture(apt)
    inputs = tiny_inputs("llama")
    loss_of(apt, inputs).backward()
    plain.update()
    outlier.update()
    for h in handles:
        h.remove()
    m = inputs["attention_mask"].float()[..., None]
    fam, state = apt.family, apt.state
    extra_hidden = torch.zeros(len(state.hidden), dtype=torch.float64)
    for site in fam.attention_sites:
        x = seen[site.o][0].detach()
        mean = (x * m).sum((0, 1)) / m.sum()
        contrib = effective_weight(apt.model.get_submodule(site.o)) * mean[None, :]
        groups = len(state.heads[site.name])
        expected = torch.stack([outlier_term(contrib.reshape(-1, groups, contrib.shape[1] // groups)[:, g].flatten(), 0)
                                for g in range(groups)])
        diff = outlier.scores()["heads"][site.name] - plain.scores()["heads"][site.name]
        assert torch.allclose(diff.double(), 0.15 * expected, rtol=1e-4, atol=1e-6)
        extra_hidden += outlier_term(contrib, 1)
    for site in fam.ffn_sites:
        x = seen[site.down][0].detach()
        mean = (x * m).sum((0, 1)) / m.sum()
        contrib = effective_weight(apt.model.get_submodule(site.down)) * mean[None, :]
        diff = outlier.scores()["ffn"][site.name] - plain.scores()["ffn"][site.name]
        assert torch.allclose(diff.double(), 0.15 * outlier_term(contrib, 0), rtol=1e-4, atol=1e-6)
        extra_hidden += outlier_term(contrib, 1)
    diff = outlier.scores()["hidden"] - plain.scores()["hidden"]
    assert torch.allclose(diff.double(), 0.15 * extra_hidden, rtol=1e-4, atol=1e-6)
    assert extra_hidden.sum() > 0


def test_weight_gradient_matches_autograd():
    apt = make("llama")
    scorer = build_scorer("weight_gradient", exclude_padding=False).attach(apt)
    paths = site_linears(apt.family)
    for path in paths:  # real weight gradients, only to check the hook-based reconstruction
        apt.model.get_submodule(path).weight.requires_grad_(True)
    loss_of(apt, tiny_inputs("llama")).backward()
    scorer.update()
    matrices = {p: (effective_weight(apt.model.get_submodule(p)) * apt.model.get_submodule(p).weight.grad).abs()
                for p in paths}
    expected = aggregate_blocks(apt.family, apt.state, matrices)
    got = scorer.scores()
    for kind in ("heads", "ffn"):
        for name, value in expected[kind].items():
            assert torch.allclose(got[kind][name], 0.15 * value, rtol=1e-4, atol=1e-9)
    assert torch.allclose(got["hidden"], 0.15 * expected["hidden"], rtol=1e-4, atol=1e-9)


def test_magnitude_head_is_the_norm_of_its_weights():
    apt = make("llama")
    site = apt.family.attention_sites[0]
    get = apt.model.get_submodule
    l1 = build_scorer("magnitude", p=1).attach(apt).scores()["heads"][site.name]
    width, kv = site.group_size * site.head_dim, site.head_dim
    q, k, v, o = (effective_weight(get(p)).abs() for p in site.linears)
    expected = [q[g * width:(g + 1) * width].sum() + k[g * kv:(g + 1) * kv].sum() + v[g * kv:(g + 1) * kv].sum()
                + o[:, g * width:(g + 1) * width].sum() for g in range(len(l1))]
    assert torch.allclose(l1, torch.stack(expected), rtol=1e-5)
    l2 = build_scorer("magnitude", p=2).attach(apt).scores()["heads"][site.name]
    assert torch.all(l2 < l1)


# ------------------------------------------------------------------------------ invariance, cuts


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
def test_scorers_do_not_change_outputs_gradients_or_parameters(kind):
    apt = make(kind)
    inputs = tiny_inputs(kind)
    logits = apt(**inputs).logits
    logits.float().pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in apt.named_parameters() if p.grad is not None}
    params = {n: p.detach().clone() for n, p in apt.named_parameters()}
    for name in SCORERS:
        options = {"kurtosis": True} if name == "apt" else {}
        scorer = build_scorer(name, **options).attach(apt)
        apt.zero_grad()
        out = apt(**inputs).logits
        out.float().pow(2).mean().backward()
        scorer.update()
        scores = scorer.scores()
        scorer.detach()
        assert torch.equal(out, logits), name
        for n, g in grads.items():
            assert torch.equal(dict(apt.named_parameters())[n].grad, g), (name, n)
        for n, p in apt.named_parameters():
            assert torch.equal(p, params[n]), (name, n)
        assert set(scores["heads"]) == set(apt.state.heads) and len(scores["hidden"]) == len(apt.state.hidden)
    with torch.no_grad():  # detached: forward is still the same
        assert torch.equal(apt(**inputs).logits, logits)


def test_no_grad_passes_are_not_counted():
    apt = make("llama")
    scorer = build_scorer("apt").attach(apt)
    with torch.no_grad():
        apt(**tiny_inputs("llama"))
    assert scorer.update() is False
    assert all(v.sum() == 0 for v in scorer.scores()["heads"].values())


@pytest.mark.parametrize("name", ["apt", "weight_gradient", "random"])
def test_scores_follow_a_physical_cut_and_checkpoints(name):
    apt = make("llama")
    scorer = build_scorer(name).attach(apt)
    loss_of(apt, tiny_inputs("llama")).backward()
    scorer.update()
    before = scorer.scores()
    index = {n: i.clone() for n, i in apt.state.head_index.items()}
    hidden_index = apt.state.hidden_index.clone()
    random_binary_masks(apt, seed=3)
    apt.prune()
    after = scorer.scores()
    assert {n: len(v) for n, v in after["heads"].items()} == apt.state.sizes()["heads"]
    assert {n: len(v) for n, v in after["ffn"].items()} == apt.state.sizes()["ffn"]
    for n, kept in apt.state.head_index.items():
        positions = torch.nonzero(torch.isin(index[n], kept)).flatten()
        assert torch.equal(after["heads"][n], before["heads"][n][positions])
    positions = torch.nonzero(torch.isin(hidden_index, apt.state.hidden_index)).flatten()
    assert torch.equal(after["hidden"], before["hidden"][positions])
    # the cut model trains and scores on
    apt.zero_grad()
    loss_of(apt, tiny_inputs("llama")).backward()
    scorer.update()
    saved = scorer.state_dict()
    fresh = build_scorer(name).attach(apt)
    fresh.load_state_dict(saved)
    for kind in ("heads", "ffn"):
        for n, v in scorer.scores()[kind].items():
            assert torch.equal(fresh.scores()[kind][n], v)
    assert torch.equal(fresh.scores()["hidden"], scorer.scores()["hidden"])


def test_random_scores_are_seeded_and_stable():
    apt = make("bert")
    a = build_scorer("random", seed=5).attach(apt).scores()
    b = build_scorer("random", seed=5).attach(apt).scores()
    c = build_scorer("random", seed=6).attach(apt).scores()
    assert torch.equal(a["hidden"], b["hidden"]) and not torch.equal(a["hidden"], c["hidden"])


def test_registry():
    assert set(SCORERS) == {"apt", "weight_gradient", "magnitude", "random"}
    with pytest.raises(ValueError, match="unknown salience"):
        build_scorer("fisher")


# --------------------------------------------------------------------------------- adapters


def test_adapter_importance_ema_mean_and_reset():
    apt = make("llama")
    importance = AdapterImportance().attach(apt)
    expected = {}
    for seed in (0, 1):
        apt.zero_grad()
        loss_of(apt, tiny_inputs("llama", seed=seed)).backward()
        importance.update()
        for path, module in apt.adapters().items():
            raw = (module.lora_A.detach() * module.lora_A.grad).sum(1).abs()
            expected[path] = 0.85 * expected.get(path, torch.zeros_like(raw)) + 0.15 * raw
    scores = importance.scores()
    for path in apt.adapters():
        assert scores[path] == pytest.approx(float(expected[path].mean()), rel=1e-5)
    assert any(v > 0 for v in scores.values())
    importance.reset()
    assert all(v == 0 for v in importance.scores().values())
