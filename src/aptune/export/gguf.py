"""GGUF export of LLaMA-family decoder exports, for llama.cpp (and the tools built on it).

Which llama.cpp architecture: its loader reads ``head_count``, ``head_count_kv`` and ``feed_forward_length``
as one number or as a per-layer array for every architecture, but the ``llama`` model then creates every
layer's tensors with layer 0's counts. The ``deci`` model (written for NVIDIA's Nemotron-NAS models, whose
layers differ in shape) creates and runs each layer with its own counts, and runs a layer with no attention
head as the identity plus its FFN. Its graph is the LLaMA one otherwise (RMS norms, rotary positions on
adjacent pairs, gated SiLU FFN), so the file says ``deci``. Checked against the llama.cpp that
llama-cpp-python 0.3.36 vendors (``src/models/deci.cpp``, ``src/llama-model.cpp``); see docs/deploy.md.

Shapes that llama.cpp cannot run as they are (found before anything is written, see :func:`unloadable`):

* layer 0 with no KV group: the head size is derived from layer 0's head count, so every layer breaks;
* an emptied FFN after a live attention block: ``deci`` then drops the attention's output as well;
* an emptied FFN in the last layer: the graph's output rows are then never selected.

With ``pad_empty=True`` these are written as the nearest shape llama.cpp runs that computes the same
function: one KV group whose projections are zero (its output is exactly zero), an FFN of width one whose
projections are zero. A layer that lost both blocks is the identity, which ``deci`` runs as such.

FFN widths are written rounded up to a multiple of ``ffn_multiple`` (default 32) with zero neurons (gate and up
rows, down columns: SiLU(0)·0 adds exactly nothing). llama.cpp's block types (q8_0, q4_0: blocks of 32 along a
row) cannot quantise a row of another length and keep such a tensor in float16, and its float16 kernels run
such rows slower: measured on SmolLM2 at 70%, unpadded widths (957, 492, ...) left the pruned file's q8_0
`ffn_down` in float16 and its float16 prefill slower than the dense model's (README, "Serving runtimes").

Layout facts the writer relies on: transformers' LLaMA rotates the two halves of each head
(``rotate_half``), llama.cpp rotates adjacent pairs, so the rows of q and k are interleaved per head
(i, i + d/2); an aptune export's RMS norms normalise over the kept hidden dimensions, which is the file's
``embedding_length``, as llama.cpp's do. The tokenizer is the export's own (byte-level BPE), written so that
llama.cpp splits text as the export's ``tokenizer.json`` does.

How a float32 file is checked (:func:`check_gguf`): llama.cpp and transformers compute the same function in
float32 and differ only in the order of their sums, so their logits differ by a rounding that grows with the
logits' scale, the width of the sums and the depth. The check therefore judges the largest |logit difference|
relative to the largest |logit| over the checked prompt positions, against ``RTOL`` = 3e-4. Measured (float32):
1.2e-6 on the tiny test model (max |logit| 6.8), 2.6e-5 on SmolLM2-135M pruned to 70% (1.0e-3 absolute at
max |logit| 38.5, which the earlier absolute 1e-3 refused). Rounding the weights to float16 gives 4.0e-3 and
3.0e-2 on the same two models. 3e-4 leaves ten times the measured float32 difference for wider and deeper
models, and stays ten times below what float16 rounding of the weights (let alone a wrong layout: unpaired
rotary rows, a norm over the wrong width, a missing block) does to the logits.

Needs the ``deploy`` extra: ``gguf`` writes the file, ``llama-cpp-python`` checks and quantises it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aptune.export.hf import export_kind
from aptune.models.loading import load_model, load_tokenizer

ARCHITECTURE = "deci"
DTYPES = {"float32": 0, "float16": 1}  # -> GGUF file type (ALL_F32, MOSTLY_F16)
QUANTIZATIONS = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15}  # -> llama.cpp's LLAMA_FTYPE_MOSTLY_* numbers
# float32 file against transformers' float32 model: max |logit difference| / max |logit| (see the module)
RTOL = 3e-4
CHECK_PROMPTS = ["What is the capital of France?", "Give three tips for staying healthy.",
                 "What is 12 plus 30?", "Write a short sentence about the sea."]
CHECK_NEW_TOKENS = 32
FFN_MULTIPLE = 32  # FFN widths are padded to this: llama.cpp's q8_0/q4_0 blocks hold 32 values of a row


@dataclass(frozen=True)
class LayerShape:
    heads: int  # query heads
    kv_heads: int
    ffn: int  # FFN width


@dataclass(frozen=True)
class DecoderShape:
    hidden: int
    head_dim: int
    group: int  # query heads per KV head (the model's; aptune prunes whole groups)
    vocab: int
    layers: tuple[LayerShape, ...]


# ------------------------------------------------------------------------------------------ shapes


def decoder_shape(model: torch.nn.Module) -> DecoderShape:
    """The per-layer head counts and FFN widths of a (pruned) LLaMA-family causal LM, read from its tensors."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = []
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        q = getattr(attention, "q_proj", None)
        heads = 0 if q is None else q.weight.shape[0] // head_dim
        kv_heads = 0 if q is None else attention.k_proj.weight.shape[0] // head_dim
        layers.append(LayerShape(heads, kv_heads, mlp.gate_proj.weight.shape[0]))
    embedding = model.model.embed_tokens.weight
    group = config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    return DecoderShape(embedding.shape[1], head_dim, group, embedding.shape[0], tuple(layers))


def unloadable(shape: DecoderShape) -> list[str]:
    """What llama.cpp's ``deci`` model cannot run in ``shape``, one sentence per layer (empty: all loadable)."""
    problems = []
    last = len(shape.layers) - 1
    for i, layer in enumerate(shape.layers):
        if i == 0 and layer.heads == 0:
            problems.append("layer 0 has no attention head left (llama.cpp derives the head size from layer 0)")
        if layer.ffn == 0 and layer.heads > 0:
            problems.append(f"layer {i} has attention but an emptied FFN (llama.cpp then skips the attention too)")
        elif layer.ffn == 0 and i == last:
            problems.append(f"layer {i}, the last, has an emptied FFN (llama.cpp then never selects its output rows)")
    return problems


def padded(shape: DecoderShape, pad_empty: bool = True, ffn_multiple: int = 1) -> DecoderShape:
    """``shape`` with the blocks :func:`unloadable` names padded to one KV group / an FFN of width one (with
    ``pad_empty``), and every non-empty FFN width rounded up to a multiple of ``ffn_multiple``."""
    last = len(shape.layers) - 1
    layers = []
    for i, layer in enumerate(shape.layers):
        heads, kv_heads, ffn = layer.heads, layer.kv_heads, layer.ffn
        if pad_empty and i == 0 and heads == 0:
            heads, kv_heads = shape.group, 1
        if pad_empty and ffn == 0 and (heads > 0 or i == last):
            ffn = 1
        ffn = -(-ffn // ffn_multiple) * ffn_multiple
        layers.append(LayerShape(heads, kv_heads, ffn))
    return DecoderShape(shape.hidden, shape.head_dim, shape.group, shape.vocab, tuple(layers))


def _check_supported(model: torch.nn.Module) -> None:
    config = model.config
    base_type = getattr(config, "aptune_base_model_type", config.model_type)
    problems = []
    if base_type != "llama":
        problems.append(f"model type {base_type!r} (the GGUF export writes LLaMA-family decoders: 'llama')")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("biases in attention or FFN projections")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"activation {config.hidden_act!r} (llama.cpp's deci model runs SiLU)")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope scaling {rope.get('rope_type')!r} (only unscaled rotary positions are written)")
    if problems:
        raise ValueError("cannot write a GGUF file for this export: " + "; ".join(problems))


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


# ------------------------------------------------------------------------------------------ tensors


def _pairs_order(head_dim: int) -> torch.Tensor:
    """Row order within a head that turns transformers' half-split rotary layout into adjacent pairs."""
    return torch.arange(head_dim).view(2, head_dim // 2).t().reshape(-1)


def _interleave(weight: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    rows = weight.view(heads, head_dim, -1)[:, _pairs_order(head_dim), :]
    return rows.reshape(heads * head_dim, -1)


def _layer_tensors(layer: torch.nn.Module, i: int, shape: LayerShape, target: LayerShape, hidden: int,
                   head_dim: int):
    """(name, tensor) of layer ``i`` in llama.cpp's names; blocks padded from ``shape`` to ``target`` are zeros."""
    attention, mlp = layer.self_attn, layer.mlp
    if target.heads:
        yield f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight
        if shape.heads:
            yield f"blk.{i}.attn_q.weight", _interleave(attention.q_proj.weight, shape.heads, head_dim)
            yield f"blk.{i}.attn_k.weight", _interleave(attention.k_proj.weight, shape.kv_heads, head_dim)
            yield f"blk.{i}.attn_v.weight", attention.v_proj.weight
            yield f"blk.{i}.attn_output.weight", attention.o_proj.weight
        else:  # one zero KV group: its output is exactly zero
            yield f"blk.{i}.attn_q.weight", torch.zeros(target.heads * head_dim, hidden)
            yield f"blk.{i}.attn_k.weight", torch.zeros(head_dim, hidden)
            yield f"blk.{i}.attn_v.weight", torch.zeros(head_dim, hidden)
            yield f"blk.{i}.attn_output.weight", torch.zeros(hidden, target.heads * head_dim)
    if target.ffn:  # zero neurons beyond the kept ones (all of them for an emptied FFN) add exactly zero
        extra = target.ffn - shape.ffn
        yield f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight
        gate, up, down = ((mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight) if shape.ffn
                          else (torch.zeros(0, hidden), torch.zeros(0, hidden), torch.zeros(hidden, 0)))
        yield f"blk.{i}.ffn_gate.weight", torch.cat([gate, gate.new_zeros(extra, hidden)])
        yield f"blk.{i}.ffn_up.weight", torch.cat([up, up.new_zeros(extra, hidden)])
        yield f"blk.{i}.ffn_down.weight", torch.cat([down, down.new_zeros(hidden, extra)], dim=1)


def _tensors(model: torch.nn.Module, shape: DecoderShape, target: DecoderShape):
    yield "token_embd.weight", model.model.embed_tokens.weight
    for i, layer in enumerate(model.model.layers):
        yield from _layer_tensors(layer, i, shape.layers[i], target.layers[i], shape.hidden, shape.head_dim)
    yield "output_norm.weight", model.model.norm.weight
    output = model.get_output_embeddings().weight
    if output.data_ptr() != model.model.embed_tokens.weight.data_ptr():  # tied: llama.cpp reuses token_embd
        yield "output.weight", output


def _as_array(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    """float16 for matrices in a float16 file; norms (1-D) stay float32, as llama.cpp expects."""
    array = tensor.detach().float().cpu().numpy()
    return array.astype(np.float16) if dtype == "float16" and array.ndim == 2 else array


# ------------------------------------------------------------------------------------------ tokenizer


def _pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the export's pre-tokenizer: how text is split before the BPE merges."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(step.get("type"), step.get("individual_digits"), step.get("use_regex")) for step in steps]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"  # GPT-2's split only
    if kinds == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"  # every digit alone, then GPT-2's split
    raise ValueError(f"the export's pre-tokenizer {kinds} has no llama.cpp equivalent known to aptune "
                     "(supported: ByteLevel with GPT-2's regex, alone or after single-digit splitting)")


def _write_vocab(writer, export_dir: Path, tokenizer) -> None:
    data = json.loads((export_dir / "tokenizer.json").read_text())
    model = data["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ValueError("the GGUF export writes byte-level BPE tokenizers (GPT-2 style); this export's is "
                         f"{model.get('type')} (byte_fallback={model.get('byte_fallback')})")
    import gguf

    by_id = {index: text for text, index in model["vocab"].items()}
    types = {}
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    size = max(by_id) + 1
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(data))
    writer.add_token_list([by_id.get(i, f"[PAD{i}]") for i in range(size)])
    writer.add_token_types([types.get(i, gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED)
                            for i in range(size)])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    probe = tokenizer("a").input_ids
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


# ------------------------------------------------------------------------------------------ writing


def require_decoder(export_dir: str | Path) -> None:
    """Refuse, before loading it, an export that is no LLaMA-family causal LM (read from its files)."""
    kind = export_kind(export_dir)
    if kind.family == "llama" and kind.architecture.endswith("ForCausalLM"):
        return
    other = "; --format onnx writes encoders for ONNX Runtime" if kind.family == "bert" else ""
    raise ValueError(f"{export_dir} holds a {kind.model_type} {kind.architecture or 'model'}: the GGUF export "
                     f"takes LLaMA-family decoders with a causal-LM head (llama.cpp runs those){other}")


def load_decoder(export_dir: str | Path):
    """The export as transformers reloads it (float32, eval mode) and its tokenizer; refused first if it is
    not a LLaMA-family decoder (:func:`require_decoder`)."""
    require_decoder(export_dir)
    model = load_model(export_dir, head="causal-lm").float().eval()
    return model, load_tokenizer(export_dir)


def write_gguf(export_dir: str | Path, path: str | Path, dtype: str = "float16", pad_empty: bool = False,
               model=None, tokenizer=None, ffn_multiple: int = FFN_MULTIPLE) -> dict:
    """Write the LLaMA-family export in ``export_dir`` as the GGUF file ``path``; returns its shape and what was
    padded. Refuses (before writing) a shape llama.cpp cannot run unless ``pad_empty``; FFN widths are padded
    with zero neurons to a multiple of ``ffn_multiple`` (1: as they are)."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if ffn_multiple < 1:
        raise ValueError(f"ffn_multiple={ffn_multiple}: FFN widths are padded to a multiple of it; give 1 or more")
    export_dir, path = Path(export_dir), Path(path)
    if model is None:
        model, tokenizer = load_decoder(export_dir)
    _check_supported(model)
    shape = decoder_shape(model)
    problems = unloadable(shape)
    if problems and not pad_empty:
        raise ValueError("llama.cpp cannot run this pruned shape as it is: " + "; ".join(problems) + ". Pass "
                         "--pad-empty to write the nearest shape it runs (one zero KV group, an FFN of width "
                         "one with zero weights): the same outputs, a few more parameters")
    target = padded(shape, pad_empty, ffn_multiple)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # renamed when complete: no half-written file under the name
    writer = gguf.GGUFWriter(str(partial), arch=ARCHITECTURE)
    try:
        _write_file(writer, export_dir, model, tokenizer, shape, target, dtype)
    except BaseException:  # nothing half-written stays behind
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return {"gguf": str(path), "dtype": dtype, "layers": [vars(layer) for layer in target.layers],
            "padded": problems if pad_empty else [],
            "zero_ffn_neurons": sum(t.ffn - s.ffn for t, s in zip(target.layers, shape.layers))}


def _write_file(writer, export_dir: Path, model, tokenizer, shape: DecoderShape, target: DecoderShape,
                dtype: str) -> None:
    """The header, the tokenizer and the tensors (padded from ``shape`` to ``target``) through ``writer``."""
    config = model.config
    # a finished run's export is <run>/export: the run's name says more than "export"
    writer.add_name(export_dir.parent.name if export_dir.name == "export" else export_dir.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(len(shape.layers))
    writer.add_feed_forward_length([layer.ffn for layer in target.layers])
    writer.add_head_count([layer.heads for layer in target.layers])
    writer.add_head_count_kv([layer.kv_heads for layer in target.layers])
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type(DTYPES[dtype])
    _write_vocab(writer, export_dir, tokenizer)
    with torch.no_grad():
        for name, tensor in _tensors(model, shape, target):
            writer.add_tensor(name, _as_array(tensor, dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_gguf(source: str | Path, output: str | Path, kind: str, threads: int | None = None) -> Path:
    """llama.cpp's own quantiser (``llama_model_quantize``) from a float GGUF file to ``kind``. A tensor whose
    row length the type's block size does not divide falls back to a type that fits (llama.cpp's rule)."""
    import ctypes

    import llama_cpp

    if kind not in QUANTIZATIONS:
        raise ValueError(f"GGUF quantisation {kind!r}; choose one of {', '.join(QUANTIZATIONS)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZATIONS[kind]
    if threads:
        params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantise {source} to {kind} (status {status})")
    return Path(output)


# ------------------------------------------------------------------------------------------ checking


def load_llama_cpp(path: str | Path, threads: int | None = None, float32_cache: bool = True, context: int = 512,
                   all_logits: bool = True):
    """The GGUF file in llama.cpp (through llama-cpp-python). For checking: logits kept for every position and
    the KV cache in float32 (llama.cpp's default is float16, a rounding the comparison should not measure)."""
    from llama_cpp import Llama

    kwargs = dict(type_k=0, type_v=0) if float32_cache else {}  # 0 = GGML_TYPE_F32
    context = min(context, _trained_context(path))
    return Llama(model_path=str(path), n_ctx=context, n_batch=context, n_threads=threads,
                 n_threads_batch=threads, logits_all=all_logits, verbose=False, **kwargs)


def _trained_context(path: str | Path) -> int:
    import gguf

    field = gguf.GGUFReader(str(path)).fields[f"{ARCHITECTURE}.context_length"]
    return int(field.contents())


def last_logits(llm) -> np.ndarray:
    """The logits of the last evaluated position (also when llama.cpp keeps no others: ``all_logits=False``)."""
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def _prompt_ids(tokenizer, prompt: str) -> tuple[list[int], str]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt
    return tokenizer(text, add_special_tokens=False).input_ids, text


def _greedy_torch(model, ids: list[int], new_tokens: int) -> list[int]:
    """Argmax decoding with the KV cache, past an end-of-sequence token as on the llama.cpp side."""
    generated = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for _ in range(new_tokens):
            generated.append(int(out.logits[0, -1].argmax()))
            out = model(torch.tensor([generated[-1:]]), cache=out.cache, use_cache=True)
    return generated


def _greedy_llama_cpp(llm, ids: list[int], new_tokens: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    generated = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(token)
        llm.eval([token])
    return generated


def check_gguf(path: str | Path, model, tokenizer, rtol: float | None = RTOL,
               prompts=CHECK_PROMPTS, new_tokens: int = CHECK_NEW_TOKENS) -> dict:
    """Run the GGUF file in llama.cpp beside the transformers model on ``prompts`` (chat-formatted):
    llama.cpp's tokens of the prompt text == the tokenizer's; max |logit difference| over every prompt
    position, and that difference relative to the largest |logit| there; greedy tokens for ``new_tokens`` steps
    on both sides. With ``rtol``, a larger relative difference, other prompt tokens or a differing greedy token
    stops with an error (the float32 check; see the module for why relative)."""
    llm = load_llama_cpp(path)
    worst, scale, tokens_equal, greedy_equal, answers = 0.0, 0.0, True, True, []
    for prompt in prompts:
        ids, text = _prompt_ids(tokenizer, prompt)
        tokens_equal &= llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        llm.reset()
        llm.eval(ids)
        got = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].float().numpy()
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
        ours = _greedy_llama_cpp(llm, ids, new_tokens)
        theirs = _greedy_torch(model, ids, new_tokens)
        greedy_equal &= ours == theirs
        answers.append({"prompt": prompt, "llama_cpp": tokenizer.decode(ours), "transformers": tokenizer.decode(theirs),
                        "same_tokens": ours == theirs})
    relative = worst / scale if scale else float("inf")
    report = {"max_abs_logit_diff": worst, "max_abs_logit": scale, "relative_logit_diff": relative,
              "prompt_tokens_equal": tokens_equal, "greedy_equal": greedy_equal, "answers": answers}
    if rtol is not None:
        _judge(path, report, rtol, new_tokens)
    return report


def _judge(path, report: dict, rtol: float, new_tokens: int) -> None:
    """Stop with one sentence per failed criterion of the float32 check."""
    failures = []
    if report["relative_logit_diff"] > rtol:
        failures.append(f"logits differ by up to {report['max_abs_logit_diff']:.2e}, "
                        f"{report['relative_logit_diff']:.1e} of the largest |logit| ({report['max_abs_logit']:.1f}; "
                        f"allowed: {rtol:.0e})")
    if not report["prompt_tokens_equal"]:
        failures.append("llama.cpp splits the prompts into other tokens than the export's tokenizer")
    if not report["greedy_equal"]:
        failures.append(f"greedy tokens differ within {new_tokens} steps")
    if failures:
        raise ValueError(f"{path} does not compute the export in llama.cpp: " + "; ".join(failures))
