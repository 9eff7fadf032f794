"""`aptune export --format gguf`: a pruned LLaMA export whose layers differ (KV groups 1, 2, 0, 1; uneven FFN
widths, one FFN emptied after live attention; pruned hidden dimensions) becomes a GGUF file that llama.cpp
loads and runs: its float32 logits equal the masked model's, its greedy tokens the transformers export's, and
llama.cpp splits the prompts into the tokenizer's tokens. Shapes llama.cpp cannot run are refused before a
file is written, and written exactly with --pad-empty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_binary_masks, randomize_adapters
from test_onnx_export import load_plainly

from aptune.cli import main
from aptune.export.gguf import CHECK_PROMPTS, RTOL, _prompt_ids, check_gguf, load_decoder, load_llama_cpp
from aptune.model import APTModel
from aptune.models import load_model, load_tokenizer


def tiny_llama_base(tmp_path):
    """A tiny random LLaMA (4 layers, 6 query heads over 2 KV groups, tied embeddings) with SmolLM2's
    tokenizer; weights drawn wide enough that greedy choices are not near-ties."""
    import transformers as tf

    tokenizer = load_tokenizer("smollm2-135m")
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=4, num_attention_heads=6,
                            num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=256,
                            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, initializer_range=0.2,
                            rope_theta=100000.0)
    torch.manual_seed(0)
    base = tmp_path / "tiny-llama"
    tf.LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base, tokenizer


def pruned_export(tmp_path, groups):
    """The masked APTModel with KV-group masks ``groups`` (one list per layer), uneven FFN widths, the last
    layer's FFN emptied and a quarter of the hidden dimensions cut; and its export folder."""
    base, tokenizer = tiny_llama_base(tmp_path)
    apt = APTModel(load_model(base, head="causal-lm"), seed=0)
    randomize_adapters(apt, scale=0.1)
    g = torch.Generator().manual_seed(3)
    ffn = {name: (torch.rand(len(mask), generator=g) < keep).float()
           for (name, mask), keep in zip(apt.state.ffn.items(), (0.7, 0.5, 0.3, 0.0))}
    hidden = (torch.rand(len(apt.state.hidden), generator=g) < 0.75).float()
    heads = {name: torch.tensor(kept, dtype=torch.float) for name, kept in zip(apt.state.heads, groups)}
    apt.state.set_masks(heads=heads, ffn=ffn, hidden=hidden)
    apt.eval()
    return apt, tokenizer, apt.export(tmp_path / "export", tokenizer=tokenizer)


def llama_cpp_logits(path, ids):
    llm = load_llama_cpp(path)
    llm.eval(ids)
    return np.asarray(llm.scores[:len(ids)], dtype=np.float32)


def test_gguf_of_a_pruned_tiny_llama_runs_in_llama_cpp_as_the_masked_model(tmp_path, capsys):
    apt, tokenizer, export = pruned_export(tmp_path, groups=[[1, 0], [1, 1], [0, 0], [0, 1]])
    path = tmp_path / "tiny.gguf"
    assert main(["export", str(export), "--format", "gguf", "--output", str(path), "--dtype", "float32",
                 "--pad-empty", "--quantize", "q8_0"]) == 0
    out = capsys.readouterr().out
    assert "padded with zero weights: layer 3 has attention but an emptied FFN" in out
    assert "greedy tokens identical" in out and path.exists() and (tmp_path / "tiny.q8_0.gguf").exists()
    assert "of the largest |logit|" in out  # the relative difference the float32 check judges
    assert sorted(p.name for p in tmp_path.glob("*.gguf*")) == ["tiny.gguf", "tiny.q8_0.gguf"]  # no partial file
    for prompt in CHECK_PROMPTS[:2]:  # masked model (not the export) against llama.cpp, every position
        ids, _ = _prompt_ids(tokenizer, prompt)
        with torch.no_grad():
            expected = apt(input_ids=torch.tensor([ids])).logits[0].numpy()
        assert np.abs(llama_cpp_logits(path, ids) - expected).max() <= RTOL * np.abs(expected).max()
    model, _ = load_decoder(export)
    report = check_gguf(path, model, tokenizer)  # raises on a difference; the fields say what was compared
    assert report["prompt_tokens_equal"] and report["greedy_equal"] and report["relative_logit_diff"] <= RTOL
    assert report["relative_logit_diff"] == report["max_abs_logit_diff"] / report["max_abs_logit"]


def test_decoder_export_loads_its_tokenizer_with_plain_transformers_and_no_prompt(tmp_path):
    """The export's config names the stock "llama" type: AutoTokenizer reads it without asking to run code."""
    _, tokenizer, export = pruned_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    assert load_plainly(export, CHECK_PROMPTS)["ids"] == tokenizer(CHECK_PROMPTS).input_ids


def test_ffn_widths_padded_with_zero_neurons_compute_the_same_function(tmp_path):
    """The default pads FFN widths to multiples of 32 (what llama.cpp's q8_0 blocks need); ``ffn_multiple=1``
    writes them as pruned. Both files give the same float32 logits."""
    from aptune.export.gguf import decoder_shape, write_gguf

    _, tokenizer, export = pruned_export(tmp_path, groups=[[1, 1], [0, 1], [1, 0], [1, 1]])
    model, _ = load_decoder(export)
    padded, raw = tmp_path / "padded.gguf", tmp_path / "raw.gguf"
    wide = write_gguf(export, padded, dtype="float32", pad_empty=True, model=model, tokenizer=tokenizer)
    narrow = write_gguf(export, raw, dtype="float32", pad_empty=True, model=model, tokenizer=tokenizer,
                        ffn_multiple=1)
    widths = [layer["ffn"] for layer in narrow["layers"]]
    assert any(w % 32 for w in widths)  # the pruned widths are uneven...
    assert [layer["ffn"] for layer in wide["layers"]] == [-(-w // 32) * 32 for w in widths]  # ...and padded
    pruned = [layer.ffn for layer in decoder_shape(model).layers]  # before the padding (an emptied FFN: 0)
    assert wide["zero_ffn_neurons"] == sum(wide["layers"][i]["ffn"] - w for i, w in enumerate(pruned)) > 0
    ids, _ = _prompt_ids(tokenizer, CHECK_PROMPTS[0])
    assert np.abs(llama_cpp_logits(padded, ids) - llama_cpp_logits(raw, ids)).max() <= 1e-5
    with pytest.raises(ValueError, match="ffn_multiple=0"):
        write_gguf(export, tmp_path / "bad.gguf", model=model, tokenizer=tokenizer, ffn_multiple=0)


def test_float16_file_is_smaller_and_close(tmp_path):
    _, tokenizer, export = pruned_export(tmp_path, groups=[[1, 1], [0, 1], [0, 0], [1, 0]])
    f32, f16 = tmp_path / "m32.gguf", tmp_path / "m16.gguf"
    assert main(["export", str(export), "--format", "gguf", "--output", str(f32), "--dtype", "float32",
                 "--pad-empty"]) == 0
    assert main(["export", str(export), "--format", "gguf", "--output", str(f16), "--pad-empty"]) == 0
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    model, _ = load_decoder(export)
    report = check_gguf(f16, model, tokenizer, rtol=None)
    assert report["prompt_tokens_equal"] and report["max_abs_logit_diff"] < 0.05


def test_a_shape_llama_cpp_cannot_run_is_refused_before_writing(tmp_path, capsys):
    _, _, export = pruned_export(tmp_path, groups=[[0, 0], [1, 1], [1, 0], [0, 1]])
    path = tmp_path / "tiny.gguf"
    assert main(["export", str(export), "--format", "gguf", "--output", str(path)]) == 2
    err = capsys.readouterr().err
    assert "layer 0 has no attention head left" in err and "layer 3 has attention but an emptied FFN" in err
    assert "--pad-empty" in err and not path.exists()


def test_gguf_output_must_name_a_file_and_onnx_quantisation_is_refused(tmp_path, capsys):
    _, _, export = pruned_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    assert main(["export", str(export), "--format", "gguf", "--output", str(tmp_path / "folder")]) == 2
    assert "NAME.gguf" in capsys.readouterr().err
    assert main(["export", str(export), "--format", "gguf", "--output", str(tmp_path / "m.gguf"),
                 "--quantize", "int8"]) == 2
    assert "GGUF takes q8_0" in capsys.readouterr().err


@pytest.mark.slow
def test_gguf_of_pruned_smollm2_runs_in_llama_cpp_as_the_export(tmp_path, capsys):
    apt = APTModel(load_model("smollm2-135m", head="causal-lm"), seed=0)
    randomize_adapters(apt, scale=0.02)
    random_binary_masks(apt, seed=0, keep=0.6, keep_hidden=0.8, empty_site=True)
    apt.eval()
    export = apt.export(tmp_path / "export", tokenizer=load_tokenizer("smollm2-135m"))
    path = tmp_path / "smollm2.gguf"
    # float32: the command itself stops unless prompt tokens, logits (within RTOL) and greedy tokens agree
    assert main(["export", str(export), "--format", "gguf", "--output", str(path), "--dtype", "float32",
                 "--pad-empty"]) == 0
    out = capsys.readouterr().out
    assert "padded with zero weights: layer 29" in out and "greedy tokens identical" in out
