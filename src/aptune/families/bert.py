"""BERT-style encoders: BERT, RoBERTa, MiniLM (post-LayerNorm, biases everywhere)."""

from __future__ import annotations

from torch import nn

from aptune.families.base import AttentionSite, FFNSite, ModelFamily, register_family


@register_family
class BertFamily(ModelFamily):
    name = "bert"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert")
    default_adapter_roles = ("q", "v", "up")  # official APT: query, value and FFN up-projection
    norm_kind = "layernorm"
    hidden_salience_sites = "stream"

    def describe(self) -> None:
        p = self.prefix
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        for i in range(cfg.num_hidden_layers):
            layer = f"{p}encoder.layer.{i}"
            self.attention_sites.append(
                AttentionSite(
                    name=f"layer.{i}.attention", module=f"{layer}.attention.self",
                    q=f"{layer}.attention.self.query", k=f"{layer}.attention.self.key",
                    v=f"{layer}.attention.self.value", o=f"{layer}.attention.output.dense",
                    head_dim=head_dim, group_size=1, empty_kind="bert", layer=i,
                )
            )
            self.ffn_sites.append(
                FFNSite(name=f"layer.{i}.ffn", inputs=(f"{layer}.intermediate.dense",),
                        down=f"{layer}.output.dense", layer=i)
            )
            self.hidden.norms += [f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm"]
        emb = f"{p}embeddings"
        self.hidden.embeddings = [
            f"{emb}.{name}" for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
            if isinstance(getattr(self.model.get_submodule(emb), name, None), nn.Embedding)
        ]
        self.hidden.extra_norms = [f"{emb}.LayerNorm"]
        self.hidden.stream_inputs = [emb] + [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]
        self.hidden.readers = [path for s in self.attention_sites for path in (s.q, s.k, s.v)]
        self.hidden.readers += [s.inputs[0] for s in self.ffn_sites]
        self.hidden.readers += self._task_head_readers()
        self.task_head = [path for path in ("classifier", f"{p}pooler.dense") if _exists(self.model, path)]
        self.hidden.writers = [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]

    def _task_head_readers(self) -> list[str]:
        """Linears of the task head that read the last hidden state (not the pooler output)."""
        base = self.model.get_submodule(self.prefix[:-1]) if self.prefix else self.model
        if getattr(base, "pooler", None) is not None:
            return [f"{self.prefix}pooler.dense"]
        readers = []
        for path in ("classifier.dense", "classifier", "qa_outputs"):
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(module, nn.Linear):
                readers.append(path)
                break
        return readers


def _exists(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False
