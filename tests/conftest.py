"""Tiny random models of every family, built from configs (no download), and shared helpers."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_bert(num_labels=3, roberta=False):
    import transformers as tf

    kw = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
              num_labels=num_labels)
    if roberta:
        return tf.RobertaForSequenceClassification(tf.RobertaConfig(pad_token_id=1, **kw))
    return tf.BertForSequenceClassification(tf.BertConfig(**kw))


def tiny_llama(tie=True):
    import transformers as tf

    config = tf.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                            tie_word_embeddings=tie, head_dim=8)
    return tf.LlamaForCausalLM(config)


def tiny_t5(gated=True):
    import transformers as tf

    config = tf.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                         num_heads=4, dropout_rate=0.0, feed_forward_proj="gated-gelu" if gated else "relu",
                         tie_word_embeddings=not gated, decoder_start_token_id=0)
    return tf.T5ForConditionalGeneration(config)


TINY = {"bert": tiny_bert, "roberta": lambda: tiny_bert(roberta=True), "llama": tiny_llama, "t5": tiny_t5}


def tiny_inputs(kind: str, batch=2, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, -2:] = 0  # some padding
    inputs = {"input_ids": ids, "attention_mask": mask}
    if kind == "t5":
        inputs["decoder_input_ids"] = torch.randint(3, 100, (batch, 5), generator=g)
    return inputs


def random_binary_masks(apt, seed=0, keep=0.6, keep_hidden=0.75, empty_site=True):
    """Random binary masks on every structure; with ``empty_site`` one attention site and one FFN site
    lose everything (the residual fallback)."""
    g = torch.Generator().manual_seed(seed)
    state = apt.state
    heads = {n: (torch.rand(len(m), generator=g) < keep).float() for n, m in state.heads.items()}
    ffn = {n: (torch.rand(len(m), generator=g) < keep).float() for n, m in state.ffn.items()}
    for masks in (heads, ffn):  # never let a random draw empty every site
        first = next(iter(masks))
        masks[first][0] = 1.0
    if empty_site:
        names = list(heads)
        heads[names[-1]] = torch.zeros_like(heads[names[-1]])
        ffn_names = list(ffn)
        ffn[ffn_names[-1]] = torch.zeros_like(ffn[ffn_names[-1]])
    hidden = (torch.rand(len(state.hidden), generator=g) < keep_hidden).float()
    hidden[0] = 1.0
    state.set_masks(heads=heads, ffn=ffn, hidden=hidden)


def randomize_adapters(apt, seed=1, scale=0.05):
    """Give adapters non-zero B so that merging is actually tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in apt.adapters().values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * scale)


def model_output(model, inputs):
    out = model(**inputs)
    return out.logits


@pytest.fixture
def no_env_data(monkeypatch):
    """$APTUNE_DATA unset, so data is found as on a fresh checkout (explicit folder, ../shared/data, hub)."""
    monkeypatch.delenv("APTUNE_DATA", raising=False)


@pytest.fixture
def tmp_export(tmp_path):
    return tmp_path / "export"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random BERT classifier saved with MiniLM's tokenizer, loadable by path."""
    import transformers as tf

    from aptune.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    config = tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("tiny") / "tiny-bert"
    tf.BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base
