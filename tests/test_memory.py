"""Memory measured as bytes of tensors: deterministic, and equal to what a hand count of a small network gives."""

from __future__ import annotations

import torch
from torch import nn

from aptune.bench.memory import SavedActivations, TrainingMemory, peak_forward_bytes, tensor_bytes


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 2, bias=False))


def test_saved_activations_are_the_input_and_the_hidden_layer_once_and_no_weight():
    model, x = _mlp(), torch.randn(3, 4)
    saved = SavedActivations(model)
    with saved.watch():
        loss = model(x).sum()
    # backward of the first matmul needs x (3x4) for W1's gradient; ReLU keeps its output h (3x8), which the
    # second matmul also needs for W2's gradient (same storage, counted once); the weights are not activations
    assert saved.bytes == (3 * 4 + 3 * 8) * 4
    loss.backward()  # the counted tensors were handed to autograd unchanged
    assert model[0].weight.grad.shape == (8, 4)


def test_watching_keeps_nothing_alive_after_the_step():
    """A branch that backward never reaches (a decoder's KV cache in training) is freed when its tensors go, as
    without the watcher. Packing tensors as is leaked it for good (an output saved by its own node held that
    node through C++: SmolLM2 training grew by ~70 MiB a step until the OOM killer stopped it)."""
    import gc
    import weakref

    model, x = _mlp(), torch.randn(3, 4)
    with SavedActivations(model).watch():
        hidden = model[0](x)
        unused = hidden.exp()  # exp saves its own output for backward; nothing backpropagates through it
        loss = model[2](hidden.relu()).sum()
    loss.backward()
    alive = weakref.ref(unused)
    del unused, hidden, loss
    gc.collect()
    assert alive() is None


def test_training_memory_is_params_grads_adam_moments_and_saved_activations_and_repeats_exactly():
    def one_run():
        model = _mlp()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        memory = TrainingMemory(model)
        for batch in (3, 5, 2):  # the step with the biggest batch saves the most
            x = torch.randn(batch, 4, generator=torch.Generator().manual_seed(batch))
            with memory.watch() as saved:
                loss = model(x).sum()
            loss.backward()
            optimizer.step()
            memory.record(batch, saved, optimizer)
            optimizer.zero_grad(set_to_none=True)
        return memory.peak

    peak = one_run()
    weights = (8 * 4 + 2 * 8) * 4
    assert peak.step == 5 and peak.params_bytes == weights and peak.grads_bytes == weights
    assert peak.optimizer_bytes == 2 * weights + 2 * 4  # exp_avg, exp_avg_sq, and a float32 step per parameter
    assert peak.activations_bytes == (5 * 4 + 5 * 8) * 4
    assert peak.total_bytes == 4 * weights + 8 + 60 * 4
    assert one_run() == peak  # deterministic


def test_peak_forward_bytes_holds_the_two_hidden_tensors_alive_at_once():
    model, x = _mlp(), torch.randn(3, 4)
    # h1 = x W1ᵀ (3x8) and relu(h1) (3x8) are alive together while ReLU runs; then relu(h1) and the output (3x2)
    assert peak_forward_bytes(model, {"input": x}) == 2 * 3 * 8 * 4
    assert peak_forward_bytes(model, {"input": x}) == peak_forward_bytes(model, {"input": x})


def test_tied_and_shared_tensors_count_once():
    weight = torch.zeros(10, 4)
    assert tensor_bytes([weight, weight, weight.t(), None]) == 160
