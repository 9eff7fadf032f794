"""For post-LN encoders the hidden-dimension salience is read on the residual stream itself (the outputs
of every hidden-size norm), as the official BERT/RoBERTa scorer does: Σ_norms (Σ|h|)·(Σ|∂L/∂h|)."""

import torch
from conftest import tiny_bert, tiny_inputs

from aptune.model import APTModel
from aptune.salience import build_scorer


def test_bert_hidden_salience_is_the_product_of_summed_stream_activations_and_gradients():
    torch.manual_seed(0)
    apt = APTModel(tiny_bert(num_labels=2), seed=0)
    assert apt.family.hidden_salience_sites == "stream"
    scorer = build_scorer("apt", beta=0.0, exclude_padding=False).attach(apt)  # beta 0: EMA = this step
    captured = {}

    def keep(path):
        def hook(module, args, output):
            output.retain_grad()
            captured[path] = output

        return hook

    paths = apt.family.hidden.norms + apt.family.hidden.extra_norms
    handles = [apt.model.get_submodule(p).register_forward_hook(keep(p)) for p in paths]
    inputs = tiny_inputs("bert")
    out = apt(**inputs, labels=torch.tensor([0, 1]))
    out.loss.backward()
    scorer.update()
    for handle in handles:
        handle.remove()
    expected = torch.zeros(32)
    for path in paths:
        h = captured[path]
        expected += h.detach().abs().sum((0, 1)) * h.grad.abs().sum((0, 1))
    assert torch.allclose(scorer.scores()["hidden"], expected, rtol=1e-4, atol=1e-8)
