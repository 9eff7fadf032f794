"""Every byte at the peak, accounted for: the allocator's own statistics follow real allocations, a run writes its
breakdown (tensors by holder, then the process's other memory) with its result, and a physical cut hands the
removed blocks' memory back."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from test_teacher_eval import CLOCK
from test_train_loop import TINY_RUN

from aptune import allocator
from aptune.bench.memory import PeakBreakdown, tensor_census
from aptune.bench.process import heap_in_use, reading
from aptune.config import load_config
from aptune.train import train

MiB = 2**20


def test_the_allocators_bytes_in_use_follow_a_tensor_allocated_and_freed():
    before = heap_in_use()
    assert before is not None, f"no statistics from {allocator.current()}"
    block = torch.ones(64 * MiB // 4)  # 64 MiB, written so that its pages are resident
    during = heap_in_use()
    del block
    after = heap_in_use()
    assert 64 * MiB <= during - before < 66 * MiB
    assert before - MiB < after < before + MiB


def test_a_reading_adds_up_to_the_resident_set():
    now = reading()
    parts = now["heap_in_use"] + now["heap_free_held"] + now["other_anonymous"] + now["files"]
    assert now["files"] > 0 and now["heap_in_use"] > 0 and now["heap_free_held"] >= 0
    assert parts == now["rss"]


def test_weights_loaded_from_a_checkpoint_lie_in_mapped_files_and_a_cut_moves_them_to_the_heap(tiny_base):
    """safetensors maps the checkpoint: its tensors are file pages, not heap, until a cut copies what survives."""
    from aptune.bench.memory import bytes_in_ranges
    from aptune.bench.process import file_backed_ranges
    from aptune.models import load_model

    model = load_model(str(tiny_base), head="sequence-classification", num_labels=2)
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    key = (weight.untyped_storage().data_ptr(), weight.untyped_storage().nbytes())
    assert bytes_in_ranges({key}, file_backed_ranges()) == key[1]
    kept = weight.detach()[:32].clone()
    assert bytes_in_ranges({(kept.untyped_storage().data_ptr(), kept.untyped_storage().nbytes())},
                           file_backed_ranges()) == 0


def test_a_storage_shared_by_two_holders_counts_once_in_the_first():
    weight = torch.zeros(10)
    view = weight[:5]  # same storage
    own = torch.zeros(3)
    assert tensor_census({"parameters": [weight], "teacher": [view, own]}) == {"parameters": 40, "teacher": 12}


def test_a_run_writes_its_breakdown_and_its_tensors_match_the_counted_step(tiny_base, tmp_path):
    run = tmp_path / "run"
    summary = train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN,
                                       "distill.enabled=true"]))
    written = json.loads((run / "summary.json").read_text())["memory_breakdown"]
    assert written == json.loads(json.dumps(summary["memory_breakdown"]))
    assert written["allocator"] == allocator.current() and set(written["stages"]) == {"start", "data", "model"}
    for name in ("peak", "busiest"):
        reading_ = written[name]
        tensors = reading_["tensors"]
        assert set(tensors) == {"parameters", "gradients", "optimizer", "teacher", "salience", "activations"}
        assert reading_["tensors_total"] == sum(tensors.values())
        in_heap = reading_["tensors_total"] - reading_["tensors_in_mapped_files"]
        assert (in_heap + reading_["other_heap_in_use"] + reading_["heap_free_held"]
                + reading_["other_anonymous"] + reading_["mapped_files"]) == reading_["rss"]
        assert reading_["other_heap_in_use"] > 0  # the tensors counted are part of what malloc handed out
    assert written["peak"]["rss"] >= written["busiest"]["rss"]
    assert written["busiest"]["heap_in_use"] >= written["peak"]["heap_in_use"]
    counted = summary["memory"]
    # the busiest sample after a forward holds the parameters and the activations the counted measure saw there
    if written["busiest"]["where"] == "forward" and written["busiest"]["step"] == counted["step"]:
        assert written["busiest"]["tensors"]["activations"] == counted["activations_bytes"]
    # the counted measure includes the teacher's snapshot and the salience statistics the breakdown finds
    assert 0 < counted["held_bytes"] <= max(written[n]["tensors"]["teacher"] + written[n]["tensors"]["salience"]
                                            for n in ("peak", "busiest"))
    assert counted["total_bytes"] == sum(counted[k] for k in ("params_bytes", "grads_bytes", "optimizer_bytes",
                                                              "activations_bytes", "held_bytes"))


def _setup(tiny_base, tmp_path, *extra):
    from accelerate import PartialState

    from aptune.train.recipe import _build_optimizer, setup

    config = load_config(None, [f"output_dir={tmp_path / 'run'}", f"model.name={tiny_base}", *TINY_RUN, *extra])
    run = setup(config, PartialState(cpu=True), tmp_path / "run")
    _build_optimizer(run)
    return run


def test_the_teacher_snapshot_is_counted_as_the_teacher(tiny_base, tmp_path):
    from aptune.distill import snapshot_teacher
    from aptune.train.recipe import _tensor_holders

    run = _setup(tiny_base, tmp_path, "distill.enabled=true")
    assert tensor_census(_tensor_holders(run))["teacher"] == 0
    snapshot_teacher(run.model)
    adapters = run.model.adapters().values()
    expected = sum((m.lora_A.numel() + m.lora_B.numel()) * m.lora_A.element_size() for m in adapters)
    assert tensor_census(_tensor_holders(run))["teacher"] == expected


@pytest.mark.parametrize("kind", ["ffn", "heads"])
def test_a_cut_frees_every_tensor_of_the_removed_blocks(tiny_base, tmp_path, kind):
    """After a physical cut (with the optimizer carried across it, as a pruning step does), every storage that held
    a tensor of the old shape is freed: nothing keeps it (hooks, the optimizer's moments, the salience buffers,
    gradients), so the memory of the removed blocks goes back to the allocator."""
    from aptune.train.recipe import _optimizer_params, _tensor_holders

    run = _setup(tiny_base, tmp_path)
    out = run.apt.compute_loss(next(run.batches))  # a step, so that gradients and AdamW moments exist
    out.loss.backward()
    run.apt.after_backward()
    run.optimizer.step()
    del out
    state = run.model.state
    masks = state.ffn if kind == "ffn" else state.heads
    site = next(iter(masks))
    masks[site].data[: len(masks[site]) // 2] = 0  # half the blocks of one site
    shapes = {name: tuple(p.shape) for name, p in run.model.named_parameters()}
    old = {name: StorageWeakRef(p.untyped_storage()) for name, p in run.model.named_parameters()}
    moments = {name: [StorageWeakRef(t.untyped_storage()) for t in run.optimizer.state[p].values()
                      if isinstance(t, torch.Tensor) and t.dim() > 0]
               for name, p in run.model.named_parameters() if p in run.optimizer.state}
    before = tensor_census(_tensor_holders(run))
    with run.apt._surgery(run.optimizer):
        run.model.prune()
    run.apt.scorer.reindex()
    run.params = _optimizer_params(run.optimizer)  # as the loop does after a pruning step
    gc.collect()
    changed = [name for name, p in run.model.named_parameters() if tuple(p.shape) != shapes[name]]
    assert changed, "the cut changed no shape"
    assert [name for name in changed if not old[name].expired()] == []
    assert [name for name in changed if name in moments and not all(m.expired() for m in moments[name])] == []
    after = tensor_census(_tensor_holders(run))
    assert after["parameters"] < before["parameters"] and after["optimizer"] < before["optimizer"]


def test_the_scorer_stops_observing_after_the_last_pruning_step_and_no_number_moves(tiny_base, tmp_path, monkeypatch):
    """The weight-gradient scorer kept a Gᵀ·X buffer per projection (and each step's inputs for it) to the end of
    the run; nothing read them after the last cut. Its hooks now leave there, and the run is the same to the bit."""
    from aptune.method import APT

    stop = APT._stop_observing_when_done
    after_last_cut = []

    def spy(apt):
        stop(apt)
        if apt.step >= apt.last_pruning_step:
            after_last_cut.append((apt.step, len(apt.scorer._handles), len(apt.scorer._grad_w)))

    def run(name):
        overrides = [f"output_dir={tmp_path / name}", f"model.name={tiny_base}", *TINY_RUN,
                     "prune.salience=weight_gradient"]
        train(load_config(None, overrides))
        return [{k: v for k, v in json.loads(line).items() if k not in CLOCK}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    monkeypatch.setattr(APT, "_stop_observing_when_done", spy)
    detached = run("detached")
    assert after_last_cut == [(18, 0, 0)]  # TINY_RUN's last pruning step: no hook, no buffer left
    monkeypatch.setattr(APT, "_stop_observing_when_done", lambda apt: None)
    assert detached == run("observing")
