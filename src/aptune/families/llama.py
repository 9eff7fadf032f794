"""LLaMA-style decoders: LLaMA, Mistral, Qwen2 (pre-RMSNorm, gated SiLU FFN, grouped-query attention).

A head block is a whole KV group: the KV head and the ``num_attention_heads / num_key_value_heads``
query heads that read it (docs/design.md). Pruning whole groups keeps every layer's group size equal to the
config's, so the stock attention code (``repeat_kv`` with ``num_key_value_groups``) runs unchanged.
"""

from __future__ import annotations

from torch import nn

from aptune.families.base import AttentionSite, FFNSite, ModelFamily, register_family


@register_family
class LlamaFamily(ModelFamily):
    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    default_adapter_roles = ("q", "v")  # official APT LLaMA scripts
    norm_kind = "rms"

    def describe(self) -> None:
        p = self.prefix
        cfg = self.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        group_size = cfg.num_attention_heads // cfg.num_key_value_heads
        for i in range(cfg.num_hidden_layers):
            layer = f"{p}layers.{i}"
            attn = f"{layer}.self_attn"
            self.attention_sites.append(
                AttentionSite(
                    name=f"layer.{i}.attention", module=attn, q=f"{attn}.q_proj", k=f"{attn}.k_proj",
                    v=f"{attn}.v_proj", o=f"{attn}.o_proj", head_dim=head_dim, group_size=group_size,
                    empty_kind="llama", layer=i,
                )
            )
            mlp = f"{layer}.mlp"
            self.ffn_sites.append(
                FFNSite(name=f"layer.{i}.ffn", inputs=(f"{mlp}.gate_proj", f"{mlp}.up_proj"),
                        down=f"{mlp}.down_proj", layer=i)
            )
            self.hidden.norms += [f"{layer}.input_layernorm", f"{layer}.post_attention_layernorm"]
        self.hidden.embeddings = [f"{p}embed_tokens"]
        self.hidden.extra_norms = [f"{p}norm"]
        self.hidden.stream_inputs = (
            [f"{p}embed_tokens"] + [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]
        )
        self.hidden.readers = [path for s in self.attention_sites for path in (s.q, s.k, s.v)]
        self.hidden.readers += [path for s in self.ffn_sites for path in s.inputs]
        self.hidden.writers = [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]
        for head in ("lm_head", "score"):
            if isinstance(getattr(self.model, head, None), nn.Linear):
                self.hidden.readers.append(head)
                if head == "score":
                    self.task_head.append(head)
                if head == "lm_head" and self.model.lm_head.weight is self.model.get_submodule(
                    f"{p}embed_tokens"
                ).weight:
                    self.tied_embeddings.append(("lm_head", f"{p}embed_tokens"))
