"""The core invariants on tiny random BERT, RoBERTa, LLaMA (GQA) and T5 models:

masked == physically pruned == exported-and-reloaded outputs; counted parameters == closed form;
rank growth and merging change no output."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, model_output, random_binary_masks, randomize_adapters, tiny_inputs
from helpers import reload_in_new_process

from aptune.model import APTModel

AUTO = {"bert": "AutoModelForSequenceClassification", "roberta": "AutoModelForSequenceClassification",
        "llama": "AutoModelForCausalLM", "t5": "AutoModelForSeq2SeqLM"}
TOL = 1e-4


def _apt(kind: str, seed: int = 0) -> APTModel:
    torch.manual_seed(seed)
    apt = APTModel(TINY[kind](), seed=seed).eval()
    randomize_adapters(apt, seed=seed + 1)
    return apt


@pytest.mark.parametrize("kind", list(TINY))
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_equals_pruned_equals_reloaded(kind, seed, tmp_path):
    apt = _apt(kind, seed)
    inputs = tiny_inputs(kind, seed=seed)
    random_binary_masks(apt, seed=seed, empty_site=seed == 0)
    with torch.no_grad():
        masked = model_output(apt, inputs)
        predicted = apt.num_kept_params()
        apt.export(tmp_path / "export")
        apt.prune()
        pruned = model_output(apt, inputs)
    assert (masked - pruned).abs().max().item() <= TOL
    assert apt.counter.count_model() == predicted == apt.num_params()
    reloaded = reload_in_new_process(tmp_path / "export", AUTO[kind], inputs, tmp_path)
    assert (masked - reloaded["result"]).abs().max().item() <= TOL
    # the export is physically smaller than the dense model
    dense_total = sum(p.numel() for p in TINY[kind]().parameters())
    assert reloaded["params"] < dense_total


@pytest.mark.parametrize("kind", list(TINY))
def test_counted_params_equal_closed_form_dense_and_pruned(kind):
    apt = _apt(kind)
    assert apt.counter.count_model() == apt.num_params() == apt.original_params
    random_binary_masks(apt, seed=3)
    predicted = apt.num_kept_params()
    apt.prune()
    assert apt.counter.count_model() == predicted


def test_roberta_base_closed_form_matches_official_count():
    """docs/method.md §B: RoBERTa-base's budgeted parameters are 85,054,464."""
    import transformers as tf

    config = tf.RobertaConfig()  # roberta-base dimensions
    with torch.device("meta"):
        model = tf.RobertaForSequenceClassification(config)
    from aptune.families import family_for
    from aptune.structures.params import ParamCounter

    family = family_for(model)
    counter = ParamCounter(family)
    sizes = {"heads": {s.name: 12 for s in family.attention_sites}, "ffn": {s.name: 3072 for s in family.ffn_sites},
             "hidden": 768}
    assert counter.count_sizes(sizes) == 85_054_464


@pytest.mark.parametrize("kind", list(TINY))
def test_rank_growth_and_merge_change_no_output(kind):
    apt = _apt(kind)
    inputs = tiny_inputs(kind)
    with torch.no_grad():
        before = model_output(apt, inputs)
        generator = torch.Generator().manual_seed(0)
        for module in apt.adapters().values():
            module.grow_rank(module.rank * 3, generator)
        grown = model_output(apt, inputs)
        merged = model_output(apt.merged_model(), inputs)
    assert all(r == 24 for r in apt.ranks().values())
    assert (before - grown).abs().max().item() <= TOL  # float32 rounding of a longer matmul only
    assert (before - merged).abs().max().item() <= TOL


def test_gqa_group_pruning_removes_its_query_heads_kv_rows_and_o_columns():
    apt = _apt("llama")
    site = apt.family.attention_sites[1]
    model = apt.model
    q, k, v, o = (model.get_submodule(p) for p in site.linears)
    hd, gs = site.head_dim, site.group_size  # 8, 2 (4 query heads over 2 KV heads)
    q_rows_g1, kv_rows_g1 = q.weight[gs * hd:].clone(), k.weight[hd:].clone()
    o_cols_g1 = o.weight[:, gs * hd:].clone()
    apt.state.set_masks(heads={site.name: torch.tensor([0.0, 1.0])})
    inputs = tiny_inputs("llama")
    with torch.no_grad():
        masked = model_output(apt, inputs)
        apt.prune()
        pruned = model_output(apt, inputs)  # the stock LlamaAttention runs on the cut tensors
    q, k, v, o = (model.get_submodule(p) for p in site.linears)
    assert q.weight.shape[0] == gs * hd and k.weight.shape[0] == hd and v.weight.shape[0] == hd
    assert o.weight.shape[1] == gs * hd
    assert torch.equal(q.weight, q_rows_g1) and torch.equal(k.weight, kv_rows_g1)
    assert torch.equal(o.weight, o_cols_g1)
    assert (masked - pruned).abs().max().item() <= TOL
    assert apt.state.head_index[site.name].tolist() == [1]


def test_soft_masks_interpolate_and_cannot_be_pruned():
    apt = _apt("bert")
    site = apt.family.attention_sites[0].name
    apt.state.set_masks(heads={site: torch.tensor([1.0, 0.5, 1.0, 0.0])})
    with pytest.raises(ValueError, match="binary"):
        apt.prune()


# ------------------------------------------------------------------------------------------- bad input


def test_unsupported_architecture_names_supported_families():
    import transformers as tf

    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match=r"does not support model_type 'gpt2'.*bert.*llama.*t5"):
        APTModel(gpt2)


def test_mask_of_wrong_shape_is_rejected():
    apt = _apt("bert")
    site = apt.family.attention_sites[0].name
    with pytest.raises(ValueError, match=r"head.* mask of 'layer.0.attention' has shape \(3,\); expected \(4,\)"):
        apt.state.set_masks(heads={site: torch.ones(3)})
    with pytest.raises(ValueError, match=r"hidden mask has shape \(31,\); expected \(32,\)"):
        apt.state.set_masks(hidden=torch.ones(31))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        apt.state.set_masks(hidden=torch.full((32,), 2.0))
    with pytest.raises(ValueError, match="unknown heads site"):
        apt.state.set_masks(heads={"layer.9.attention": torch.ones(4)})


def test_unknown_adapter_target_is_rejected():
    from aptune.model import AdapterConfig

    with pytest.raises(ValueError, match="unknown adapter targets"):
        AdapterConfig(targets=["query"])


def test_density_outside_unit_interval_is_rejected(capsys, tmp_path):
    from aptune.cli import main

    for density in ("0", "1.5", "-0.2"):
        assert main(["prune", "--density", density, "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "density must lie in (0, 1]" in err and density.lstrip("-") in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_an_export_pruned_again_exports_and_reloads_the_same(kind, tmp_path):
    """Prune-then-tune starts from an export (``init_from``): its classes are aptune's own, and a second cut
    must export as the stock architecture again and reload to the same outputs."""
    from aptune.models import load_model

    def cut_without_emptying(model, seed):
        random_binary_masks(model, seed=seed, empty_site=False)
        for masks in (model.state.heads, model.state.ffn):
            for mask in masks.values():
                mask[0] = 1.0  # no block emptied (see the next test)

    apt = _apt(kind)
    cut_without_emptying(apt, seed=5)
    apt.export(tmp_path / "first")
    head = "causal-lm" if kind == "llama" else "sequence-classification"
    again = APTModel(load_model(str(tmp_path / "first"), head=head), seed=1).eval()
    assert again.state.sizes() == apt.state.kept_sizes()
    randomize_adapters(again, seed=2)
    cut_without_emptying(again, seed=6)
    inputs = tiny_inputs(kind)
    with torch.no_grad():
        masked = model_output(again, inputs)
        again.export(tmp_path / "second")
    reloaded = reload_in_new_process(tmp_path / "second", AUTO[kind], inputs, tmp_path)
    assert (masked - reloaded["result"]).abs().max().item() <= TOL
    assert reloaded["params"] < sum(p.numel() for p in load_model(str(tmp_path / "first"), head=head).parameters())


def test_an_export_with_an_emptied_block_is_refused_by_name(tmp_path):
    from aptune.models import load_model

    apt = _apt("llama")
    random_binary_masks(apt, seed=0, empty_site=True)
    apt.export(tmp_path / "export")
    with pytest.raises(ValueError, match="an earlier cut emptied the block layer.2.attention"):
        APTModel(load_model(str(tmp_path / "export"), head="causal-lm"))
