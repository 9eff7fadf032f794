"""T5 encoder-decoders: encoder self-attention, decoder self- and cross-attention, plain or gated FFN.

T5 has no biases and uses RMS norms without centring. The relative position bias is computed once, by
the first layer of each stack, for all heads, and passed down the stack; a layer whose heads were pruned
takes the slice of it for its surviving heads (see ``aptune.structures.standins.install_t5_bias_slicing``).
"""

from __future__ import annotations

from torch import nn

from aptune.families.base import AttentionSite, FFNSite, ModelFamily, register_family


@register_family
class T5Family(ModelFamily):
    name = "t5"
    model_types = ("t5", "mt5")
    default_adapter_roles = ("q", "v", "up")  # official APT: q, v (self and cross) and wi_0 / wi
    norm_kind = "rms"

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    def describe(self) -> None:
        cfg = self.config
        gated = cfg.is_gated_act
        for stack, n_layers in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
            if not hasattr(self.model, stack):
                continue
            for i in range(n_layers):
                block = f"{stack}.block.{i}"
                attentions = [("self", f"{block}.layer.0.SelfAttention")]
                if stack == "decoder":
                    attentions.append(("cross", f"{block}.layer.1.EncDecAttention"))
                for kind, attn in attentions:
                    self.attention_sites.append(
                        AttentionSite(
                            name=f"{stack}.{i}.{kind}_attention", module=attn, q=f"{attn}.q", k=f"{attn}.k",
                            v=f"{attn}.v", o=f"{attn}.o", head_dim=cfg.d_kv, group_size=1, empty_kind="t5",
                            layer=i, stack=stack,
                        )
                    )
                ff_layer = f"{block}.layer.{2 if stack == 'decoder' else 1}"
                dense = f"{ff_layer}.DenseReluDense"
                inputs = (f"{dense}.wi_0", f"{dense}.wi_1") if gated else (f"{dense}.wi",)
                self.ffn_sites.append(
                    FFNSite(name=f"{stack}.{i}.ffn", inputs=inputs, down=f"{dense}.wo", layer=i, stack=stack)
                )
                self.hidden.norms += [f"{block}.layer.{j}.layer_norm" for j in range(3 if stack == "decoder" else 2)]
            self.hidden.extra_norms.append(f"{stack}.final_layer_norm")
        # encoder/decoder embed_tokens share the weight of `shared` (module or parameter sharing)
        self.hidden.embeddings = ["shared"] + [
            f"{stack}.embed_tokens" for stack in ("encoder", "decoder")
            if getattr(getattr(self.model, stack, None), "embed_tokens", None) is not None
        ]
        self.hidden.stream_inputs = ["shared"] + [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]
        self.hidden.readers = [path for s in self.attention_sites for path in (s.q, s.k, s.v)]
        self.hidden.readers += [path for s in self.ffn_sites for path in s.inputs]
        self.hidden.writers = [s.o for s in self.attention_sites] + [s.down for s in self.ffn_sites]
        if isinstance(getattr(self.model, "lm_head", None), nn.Linear):
            self.hidden.readers.append("lm_head")
            if self.model.lm_head.weight is self.model.shared.weight:
                self.tied_embeddings.append(("lm_head", "shared"))

    def role_paths(self) -> dict[str, list[str]]:
        roles = super().role_paths()
        # The official code adapts wi_0 (the gate) of gated T5: call it "up" here as the FFN's first input.
        if self.config.is_gated_act:
            roles["up"], roles["gate"] = roles["gate"], roles["up"]
        return roles
