"""A bfloat16 base: float32 adapters and head, masked == pruned == reloaded within a stated tolerance, a run that
reaches its density, exports in the chosen dtype and needs less training memory than float32."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import random_binary_masks, randomize_adapters, tiny_bert, tiny_inputs, tiny_llama
from helpers import reload_in_new_process
from safetensors.torch import load_file

from aptune.config import load_config
from aptune.model import APTModel
from aptune.models import resolve_dtype
from aptune.train import train

AUTO_CLASS = {"bert": "AutoModelForSequenceClassification", "llama": "AutoModelForCausalLM"}
MAKE = {"bert": tiny_bert, "llama": tiny_llama}


def bf16_ulps(reference: torch.Tensor, ulps: int) -> float:
    """``ulps`` units in the last place of bfloat16 (8 significant bits) at the largest magnitude of ``reference``:
    the spacing of bfloat16 numbers there is 2^(exponent - 7)."""
    return ulps * 2.0 ** (math.floor(math.log2(float(reference.abs().max()))) - 7)


def test_low_precision_base_gets_float32_adapters_and_head_and_runs_with_or_without_autocast():
    apt = APTModel(tiny_bert().to(torch.bfloat16), seed=0)
    assert apt.base_dtype == torch.bfloat16 and apt.low_precision
    assert {m.lora_A.dtype for m in apt.adapters().values()} == {torch.float32}
    assert {m.weight.dtype for m in apt.adapters().values()} == {torch.bfloat16}  # the frozen base stays small
    for path in apt.family.task_head:
        assert {p.dtype for p in apt.model.get_submodule(path).parameters()} == {torch.float32}, path
    inputs = tiny_inputs("bert")
    with torch.no_grad():
        under_autocast = apt(**inputs).logits  # APTModel.forward autocasts
        plain = apt.model(**inputs).logits  # a user's loop calling the inner model, no autocast
    assert under_autocast.dtype == torch.bfloat16  # autocast runs the head's matmul in bf16
    assert plain.dtype == torch.float32  # without it, the float32 head computes in float32
    assert torch.allclose(under_autocast.float(), plain, atol=bf16_ulps(plain, 4))


def test_float32_model_computes_without_autocast():
    """A float32 base is not touched by the precision code: no autocast context, adapters in float32."""
    apt = APTModel(tiny_bert(), seed=0)
    assert not apt.low_precision
    assert not isinstance(apt.autocast(), torch.autocast)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_masked_equals_pruned_equals_reloaded_in_bf16(kind, tmp_path):
    """Cutting masked blocks out of bfloat16 tensors changes no output bit (the masked entries contribute exact
    zeros); merging the float32 adapters into bfloat16 weights rounds each merged weight once (at most half a
    bfloat16 ulp), which moves the logits by about one ulp at their scale: 4 ulps is the tolerance. The bfloat16
    model stays within 16 ulps of the same model in float32."""
    torch.manual_seed(0)
    base = MAKE[kind]()
    reference = APTModel(copy.deepcopy(base), seed=0)
    apt = APTModel(base.to(torch.bfloat16), seed=0)
    for model in (apt, reference):
        random_binary_masks(model, empty_site=True)
        randomize_adapters(model)
        model.eval()
    inputs = tiny_inputs(kind)
    with torch.no_grad():
        in_float32 = reference(**inputs).logits
        masked = apt(**inputs).logits.float()
        apt.prune()
        pruned = apt(**inputs).logits.float()
    assert torch.equal(pruned, masked)
    assert torch.allclose(masked, in_float32, atol=bf16_ulps(in_float32, 16))
    export = apt.export(tmp_path / "export")
    assert {t.dtype for t in load_file(str(export / "model.safetensors")).values()} == {torch.bfloat16}
    reloaded = reload_in_new_process(export, AUTO_CLASS[kind], inputs, tmp_path)["result"].float()
    assert torch.allclose(reloaded, masked, atol=bf16_ulps(masked, 4))


def test_export_dtype_is_a_setting():
    apt = APTModel(tiny_llama().to(torch.bfloat16), seed=0)
    assert {p.dtype for p in apt.merged_model().parameters()} == {torch.bfloat16}
    assert {p.dtype for p in apt.merged_model(torch.float32).parameters()} == {torch.float32}


def test_auto_dtype_is_bf16_on_a_gpu_only_and_never_for_full_fine_tuning():
    assert resolve_dtype("auto", on_gpu=False) == torch.float32
    assert resolve_dtype("auto", on_gpu=True) == torch.bfloat16
    assert resolve_dtype("auto", on_gpu=True, full_precision=True) == torch.float32
    assert resolve_dtype("float16") == torch.float16


def test_full_fine_tuning_in_bf16_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="model.dtype=float32"):
        load_config(None, ["adapter.train_base=true", "model.dtype=bfloat16"])
    with pytest.raises(ValueError, match="model.dtype must be one of"):
        load_config(None, ["model.dtype=bf16"])


BF16_RUN = ["data.task=sst2", "data.max_length=32", "data.max_train_samples=128", "data.max_eval_samples=32",
            "train.steps=16", "train.batch_size=8", "train.eval_every=8", "train.log_every=4", "prune.density=0.5",
            "prune.start_step=2", "prune.num_steps=3", "prune.end_fraction=0.75", "prune.warmup_fraction=0",
            "prune.mask_lr=0.5", "train.lr=1e-3", "train.threads=1"]


def test_bf16_run_reaches_its_density_exports_in_bf16_and_counts_less_memory(tiny_base, tmp_path):
    """The same tiny run in float32 and in bfloat16: both reach the density; the bf16 export holds bf16 weights
    (export.dtype=float32 gives float32 ones); the bf16 run's counted training memory is smaller."""
    summaries = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        summaries[dtype] = train(load_config(None, [f"output_dir={out}", f"model.name={tiny_base}", *BF16_RUN,
                                                    f"model.dtype={dtype}"]))
    bf16 = summaries["bfloat16"]
    assert 0.35 < bf16["density"] <= 0.5
    assert math.isfinite(bf16["final"]["accuracy"])
    weights = load_file(str(tmp_path / "bfloat16" / "export" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    memory = {dtype: s["memory"] for dtype, s in summaries.items()}
    assert memory["bfloat16"]["params_bytes"] < 0.6 * memory["float32"]["params_bytes"]
    assert memory["bfloat16"]["total_bytes"] < memory["float32"]["total_bytes"]
    out = tmp_path / "bf16-export-f32"
    train(load_config(None, [f"output_dir={out}", f"model.name={tiny_base}", *BF16_RUN, "model.dtype=bfloat16",
                             "export.dtype=float32"]))
    assert {t.dtype for t in load_file(str(out / "export" / "model.safetensors")).values()} == {torch.float32}


def test_low_precision_rms_norm_matches_autograd_and_keeps_half_the_bytes():
    """The bf16 RMS norm's hand-written backward equals autograd's through the same float32 computation (checked in
    float64 by gradcheck, and in bf16 against the composed ops), while it keeps the bf16 input, not a float32
    copy of it."""
    from aptune.bench.memory import SavedActivations
    from aptune.structures.masks import LowPrecisionRMSNorm

    torch.manual_seed(0)
    x64 = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(8, dtype=torch.float64, requires_grad=True)
    # gradcheck in float64 (the function computes in float32 inside: compare against that with its tolerance)
    assert torch.autograd.gradcheck(lambda x, w: LowPrecisionRMSNorm.apply(x.float(), w.float(), 1e-6).double(),
                                    (x64, w64), eps=1e-3, atol=1e-2, rtol=1e-2)

    def composed(x, w):
        xf = x.to(torch.float32)
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)

    x = torch.randn(4, 6, 16).to(torch.bfloat16).requires_grad_(True)
    w = torch.randn(16).to(torch.bfloat16).requires_grad_(True)
    grad = torch.randn(4, 6, 16).to(torch.bfloat16)
    outputs, grads, saved = [], [], []
    for fn in (composed, lambda a, b: LowPrecisionRMSNorm.apply(a, b, 1e-6)):
        counter = SavedActivations()
        with counter.watch():
            out = fn(x, w)
        out.backward(grad)
        outputs.append(out.detach())
        grads.append((x.grad.clone(), w.grad.clone()))
        saved.append(counter.bytes)
        x.grad = w.grad = None
    assert torch.equal(outputs[0], outputs[1])
    for ours, reference in zip(grads[1], grads[0]):
        assert torch.allclose(ours.float(), reference.float(), atol=bf16_ulps(reference.float(), 2))
    assert saved[1] < saved[0]


def test_chunked_lm_loss_is_transformers_loss_and_gradient():
    """Same mean over labelled tokens and the same gradient as transformers' causal-LM loss, in float64, with chunks
    that split rows (3 positions a chunk over 2 x 7) and labels that ignore some positions."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from aptune.models.lm_loss import causal_lm_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = labels[1, -2:] = -100  # a prompt, and padding
    ours = causal_lm_loss(logits, labels, chunk_tokens=3)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    reference = ForCausalLMLoss(logits.float().double(), labels, vocab_size=11)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(ours, reference, rtol=1e-6) and torch.allclose(grad_ours, grad_reference, atol=1e-6)
    summed = causal_lm_loss(logits, labels, num_items_in_batch=5)  # gradient accumulation: sum / items
    assert torch.allclose(summed, ForCausalLMLoss(logits.double(), labels, vocab_size=11, num_items_in_batch=5))
    nothing = torch.full_like(labels, -100)
    assert causal_lm_loss(logits, nothing).item() == 0.0


def test_a_bfloat16_causal_lm_keeps_its_logits_in_bfloat16_for_the_loss():
    """APTModel's loss for a bfloat16 causal LM: transformers' loss on the same logits within float32 rounding, and
    autograd keeps the bfloat16 logits instead of a float32 log-softmax of them (half those bytes)."""
    from aptune.bench.memory import SavedActivations

    apt = APTModel(tiny_llama().to(torch.bfloat16), seed=0)
    inputs = tiny_inputs("llama")
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    saved = []
    for loss_of in (lambda: apt(**inputs, labels=labels).loss,
                    lambda: apt.model.loss_function(apt(**inputs).logits, labels, vocab_size=100)):  # transformers'
        counter = SavedActivations(apt)
        with counter.watch():
            loss = loss_of()
        saved.append(counter.bytes)
        loss.backward()
        grads = [m.lora_B.grad.clone() for m in apt.adapters().values()]
        apt.zero_grad(set_to_none=True)
        saved[-1] = (saved[-1], loss.item(), grads)
    (ours, loss_ours, grads_ours), (theirs, loss_theirs, grads_theirs) = saved
    assert abs(loss_ours - loss_theirs) <= 1e-5 * loss_theirs
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(grads_ours, grads_theirs))
    tokens, vocab = labels.numel(), 100
    # a float32 log-softmax of every position -> the bfloat16 logits (the two losses' scalars differ by 4 bytes)
    assert abs((theirs - ours) - tokens * vocab * (4 - 2)) <= 4
