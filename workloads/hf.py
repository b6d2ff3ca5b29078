"""Transformer traces from a HF-style config (no weights, nothing downloaded).

Built-in configs live in workloads/configs/*.json (public config.json values, each with its
`_source`). A user's own config is a path to its config.json, a dict or a
`transformers.PretrainedConfig` (optional dependency) with the same field names.

Families, chosen from `model_type`:
* decoder-only (llama, mistral, qwen2, opt …): per layer norm, q/k/v/o projections,
  attention (GQA when num_key_value_heads < num_attention_heads), residual, norm, MLP (gated
  SiLU for llama-style, fc1/ReLU/fc2 for OPT), residual; embedding gather, final norm, LM head;
* MoE decoder (mixtral): the MLP becomes a router GEMM and one GEMM per expert and projection
  with the routed token count as M (op.meta["expert"], ["experts"], ["top_k"]);
* encoder (bert): embeddings, post-norm layers with full (non-causal) attention, pooler;
* vision transformer (vit): 16×16 patch-embedding conv, pre-norm encoder, classifier.

Every weight op carries op.meta["role"] (attn_in, attn_out, mlp_in, mlp_out, router, head,
patch_embed) and ["layer"], which sparsity recipes select on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from simsparse.core.errors import bad
from simsparse.core.ops import AttnGeom, ConvGeom, Op, Trace
from workloads.torch_extract import ELTWISE_FLOPS

CONFIG_DIR = Path(__file__).parent / "configs"
PHASES = ("prefill", "decode", "train")
ALIASES = {
    "vit-b/16": "vit-b-16", "vit-base-patch16-224": "vit-b-16", "google/vit-base-patch16-224": "vit-b-16",
    "bert-base-uncased": "bert-base", "bert-large-uncased": "bert-large",
    "meta-llama/llama-2-7b-hf": "llama-2-7b", "meta-llama/llama-2-13b-hf": "llama-2-13b",
    "meta-llama/llama-2-70b-hf": "llama-2-70b", "meta-llama/meta-llama-3-8b": "llama-3-8b",
    "mistralai/mixtral-8x7b-v0.1": "mixtral-8x7b",
}
GATED_TYPES = ("llama", "mistral", "mixtral", "qwen2", "gemma")
ENCODER_TYPES = ("bert", "roberta")
ROUTING = ("balanced", "random")


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config: str | dict[str, Any] | Any) -> tuple[str, dict[str, Any]]:
    """(name, config dict) from a built-in name, a path to a config.json, a dict, or a
    transformers config object."""
    if isinstance(name_or_config, (str, Path)) and is_config_path(name_or_config):
        return _read_config_file(Path(name_or_config))
    if isinstance(name_or_config, str):
        key = ALIASES.get(name_or_config.lower(), name_or_config.lower())
        if key.startswith("facebook/"):
            key = key.split("/", 1)[1]
        path = CONFIG_DIR / f"{key}.json"
        if not path.exists():
            raise bad("model", name_or_config, ", ".join(config_names()))
        return key, json.loads(path.read_text())
    if isinstance(name_or_config, dict):
        return str(name_or_config.get("_name_or_path") or "custom"), dict(name_or_config)
    if hasattr(name_or_config, "to_dict"):
        d = name_or_config.to_dict()
        return str(d.get("_name_or_path") or d.get("model_type") or "custom"), d
    raise bad("model", type(name_or_config).__name__, "a built-in name, a dict or a transformers config")


def is_config_path(spec: str | Path) -> bool:
    """A path to a HF config file (a Path, or a name ending in `.json`), not a built-in name."""
    return isinstance(spec, Path) or spec.lower().endswith(".json")


def _read_config_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(name, config) from a config.json; the name is its `_name_or_path`, else its folder or file stem."""
    if not path.is_file():
        raise bad("model", str(path), "an existing HF config.json file (or a built-in name: "
                  + ", ".join(config_names()) + ")")
    try:
        c = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise bad("model", str(path), f"a readable HF config.json file ({e})") from None
    except json.JSONDecodeError as e:
        raise bad("model", str(path), f"a valid JSON HF config ({e.msg} at line {e.lineno})") from None
    if not isinstance(c, dict):
        raise bad("model", str(path), f"a JSON object (a HF config.json), not a {type(c).__name__}")
    stem = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return str(c.get("_name_or_path") or stem), c


def family(c: dict[str, Any]) -> str:
    """decoder | moe | encoder | vit, from the config's model_type and fields."""
    mt = str(c.get("model_type", "")).lower()
    if mt == "vit" or "patch_size" in c:
        return "vit"
    if mt in ENCODER_TYPES:
        return "encoder"
    if c.get("num_local_experts") or mt == "mixtral":
        return "moe"
    return "decoder"


def _need(c: dict[str, Any], key: str) -> Any:
    if key not in c or c[key] is None:
        raise bad(f"config.{key}", None, "a value (required for this model family)")
    return c[key]


class _Ops:
    """Collects ops with role / layer meta."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.ops: list[Op] = []

    def gemm(self, name: str, m: int, n: int, k: int, role: str, layer: int | None = None, **meta: Any) -> None:
        op = Op.gemm(m, n, k, dtype=self.dtype, name=name)
        op.meta.update(role=role, **({"layer": layer} if layer is not None else {}), **meta)
        self.ops.append(op)

    def elt(self, name: str, numel: int, key: str, n_inputs: int = 1, flops: float | None = None,
            layer: int | None = None) -> None:
        op = Op.eltwise(numel, dtype=self.dtype, flops_per_elem=ELTWISE_FLOPS[key] if flops is None else flops,
                        n_inputs=n_inputs, name=name)
        op.meta["op_type"] = key
        if layer is not None:
            op.meta["layer"] = layer
        self.ops.append(op)

    def attn(self, name: str, geom: AttnGeom, layer: int) -> None:
        op = Op.attention(geom, dtype=self.dtype, name=name)
        op.meta.update(role="attention", layer=layer)
        self.ops.append(op)


def expert_routing(tokens: int, experts: int, top_k: int, routing: Any, layer: int, seed: int) -> list[int]:
    """Tokens per expert for one MoE layer (their sum is tokens · top_k).

    routing: "balanced" (as even as possible), "random" (each token picks top_k distinct
    experts uniformly, seeded), a list of per-expert counts (every layer), or a list of such
    lists (one per layer).
    """
    total = tokens * top_k
    if isinstance(routing, str):
        if routing == "balanced":
            q, r = divmod(total, experts)
            return [q + (1 if e < r else 0) for e in range(experts)]
        if routing == "random":
            rng = np.random.default_rng([seed, layer])
            picks = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k]
            return [int(c) for c in np.bincount(picks.ravel(), minlength=experts)]
        raise bad("routing", routing, "balanced, random, or a list of tokens per expert")
    counts = list(routing)
    if counts and isinstance(counts[0], (list, tuple)):
        counts = list(counts[layer % len(counts)])
    if len(counts) != experts or any(int(c) < 0 for c in counts) or sum(int(c) for c in counts) != total:
        raise bad("routing", counts, f"{experts} non-negative counts summing to tokens·top_k = {total}")
    return [int(c) for c in counts]


def hf(name_or_config: str | dict[str, Any] | Any, batch: int = 1, seq_len: int = 128,
       phase: str = "prefill", kv_len: int | None = None, dtype: str = "fp16",
       include_lm_head: bool = True, routing: Any = "balanced", seed: int = 0) -> Trace:
    """Transformer trace from a config (built-in name, dict or transformers config).

    phase: "prefill" (seq_len tokens per sequence, causal), "decode" (one new token per
    sequence attending to kv_len cached positions; default kv_len = seq_len) or "train"
    (prefill forward + backward GEMMs, see workloads.training).
    routing (MoE only): tokens per expert, see expert_routing.
    """
    if phase not in PHASES:
        raise bad("phase", phase, ", ".join(PHASES))
    for f, v in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise bad(f, v, "a positive integer")
    name, c = load_config(name_or_config)
    fam = family(c)
    fwd_phase = "prefill" if phase == "train" else phase
    if fam in ("encoder", "vit") and fwd_phase == "decode":
        raise bad("phase", phase, f"prefill or train ({name} is an encoder: no decode phase)")
    b = _Ops(dtype)
    if fam == "vit":
        seq_len = _vit(b, c, batch)
        ctx = seq_len
    elif fam == "encoder":
        _encoder(b, c, batch, seq_len)
        ctx = seq_len
    else:
        q_len = seq_len if fwd_phase == "prefill" else 1
        ctx = kv_len if kv_len is not None else seq_len
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < q_len:
            raise bad("kv_len", kv_len, f"an integer >= seq_len={seq_len} in prefill (the keys include the "
                      "prompt's own positions; more is past context)" if fwd_phase == "prefill"
                      else "a positive integer (cached positions the new token attends to)")
        _decoder(b, c, batch, q_len, ctx, fwd_phase == "prefill", include_lm_head, fam == "moe", routing, seed)
    prov = {"model": name, "source": "config", "config_source": c.get("_source", "user config"),
            "family": fam, "batch": batch, "seq_len": seq_len, "phase": phase, "kv_len": ctx, "dtype": dtype,
            "weights": "none (shapes from config)"}
    if fam == "moe":
        prov["routing"] = routing if isinstance(routing, str) else "given counts"
        prov["seed"] = seed
    trace = Trace(f"{name}-{phase}-b{batch}", tuple(b.ops), prov)
    if phase == "train":
        from workloads.training import training_trace

        trace = training_trace(trace)
    return trace


def _decoder(b: _Ops, c: dict[str, Any], batch: int, q_len: int, ctx: int, causal: bool,
             include_lm_head: bool, moe: bool, routing: Any, seed: int) -> None:
    d = _need(c, "hidden_size")
    heads = _need(c, "num_attention_heads")
    kv_heads = c.get("num_key_value_heads") or heads
    hd = c.get("head_dim") or d // heads
    ffn = c.get("intermediate_size") or c.get("ffn_dim") or 4 * d
    layers = _need(c, "num_hidden_layers")
    mt = str(c.get("model_type", "")).lower()
    gated = mt in GATED_TYPES or c.get("hidden_act") == "silu"
    opt = mt == "opt"
    tokens = batch * q_len
    b.elt("embed_tokens", tokens * d, "embedding")
    if opt:  # learned positions, added to the token embeddings
        b.elt("embed_positions", tokens * d, "embedding")
        b.elt("embed_add", tokens * d, "add", n_inputs=2)
    o_name = "out_proj" if opt else "o_proj"
    for i in range(layers):
        p = f"layers.{i}."
        b.elt(p + "input_norm", tokens * d, "layer_norm" if opt else "rms_norm", layer=i)
        b.gemm(p + "q_proj", tokens, heads * hd, d, "attn_in", i)
        b.gemm(p + "k_proj", tokens, kv_heads * hd, d, "attn_in", i)
        b.gemm(p + "v_proj", tokens, kv_heads * hd, d, "attn_in", i)
        b.attn(p + "attn", AttnGeom(batch, heads, q_len, ctx, hd, kv_heads=kv_heads if kv_heads != heads else None,
                                    causal=causal), i)
        b.gemm(p + o_name, tokens, d, heads * hd, "attn_out", i)
        b.elt(p + "residual", tokens * d, "add", n_inputs=2, layer=i)
        b.elt(p + "post_norm", tokens * d, "layer_norm" if opt else "rms_norm", layer=i)
        if moe:
            _moe(b, c, p, i, tokens, d, ffn, routing, seed)
        elif gated:
            b.gemm(p + "gate_proj", tokens, ffn, d, "mlp_in", i)
            b.gemm(p + "up_proj", tokens, ffn, d, "mlp_in", i)
            # SiLU(gate) · up: silu (4) + multiply (1) per element, reading two operands
            b.elt(p + "act_mul", tokens * ffn, "silu", n_inputs=2, flops=ELTWISE_FLOPS["silu"] + 1, layer=i)
            b.gemm(p + "down_proj", tokens, d, ffn, "mlp_out", i)
        else:
            b.gemm(p + "fc1", tokens, ffn, d, "mlp_in", i)
            act = str(c.get("activation_function") or c.get("hidden_act") or "relu")
            b.elt(p + "act", tokens * ffn, act if act in ELTWISE_FLOPS else "gelu", layer=i)
            b.gemm(p + "fc2", tokens, d, ffn, "mlp_out", i)
        b.elt(p + "residual2", tokens * d, "add", n_inputs=2, layer=i)
    b.elt("norm", tokens * d, "layer_norm" if opt else "rms_norm")
    if include_lm_head:
        b.gemm("lm_head", tokens, _need(c, "vocab_size"), c.get("word_embed_proj_dim") or d, "head")


def _moe(b: _Ops, c: dict[str, Any], p: str, i: int, tokens: int, d: int, ffn: int, routing: Any,
         seed: int) -> None:
    n_exp = int(c.get("num_local_experts") or c.get("num_experts") or 8)
    top_k = int(c.get("num_experts_per_tok") or 2)
    counts = expert_routing(tokens, n_exp, top_k, routing, i, seed)
    q = p + "block_sparse_moe."
    b.gemm(q + "gate", tokens, n_exp, d, "router", i, experts=n_exp, top_k=top_k, tokens_per_expert=counts)
    b.elt(q + "router_softmax", tokens * n_exp, "softmax", layer=i)
    for e, cnt in enumerate(counts):
        if cnt == 0:
            continue  # an expert no token was routed to does no work
        meta = {"expert": e, "experts": n_exp, "top_k": top_k, "tokens_routed": cnt}
        pe = f"{q}experts.{e}."
        b.gemm(pe + "w1", cnt, ffn, d, "mlp_in", i, **meta)
        b.gemm(pe + "w3", cnt, ffn, d, "mlp_in", i, **meta)
        b.elt(pe + "act_mul", cnt * ffn, "silu", n_inputs=2, flops=ELTWISE_FLOPS["silu"] + 1, layer=i)
        b.gemm(pe + "w2", cnt, d, ffn, "mlp_out", i, **meta)
    # weighted sum of the top_k expert outputs per token: a multiply-add per expert and element
    b.elt(q + "combine", tokens * d, "add", n_inputs=top_k, flops=2 * top_k, layer=i)


def _encoder(b: _Ops, c: dict[str, Any], batch: int, seq: int) -> None:
    d = _need(c, "hidden_size")
    heads = _need(c, "num_attention_heads")
    ffn = c.get("intermediate_size") or 4 * d
    layers = _need(c, "num_hidden_layers")
    hd = d // heads
    tokens = batch * seq
    act = str(c.get("hidden_act", "gelu"))
    for part in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        b.elt(f"embeddings.{part}", tokens * d, "embedding")
    b.elt("embeddings.add", tokens * d, "add", n_inputs=3, flops=2)
    b.elt("embeddings.LayerNorm", tokens * d, "layer_norm")
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            b.gemm(f"{p}attention.self.{proj}", tokens, d, d, "attn_in", i)
        b.attn(p + "attention.self.attn", AttnGeom(batch, heads, seq, seq, hd), i)
        b.gemm(p + "attention.output.dense", tokens, d, d, "attn_out", i)
        b.elt(p + "attention.output.add", tokens * d, "add", n_inputs=2, layer=i)
        b.elt(p + "attention.output.LayerNorm", tokens * d, "layer_norm", layer=i)
        b.gemm(p + "intermediate.dense", tokens, ffn, d, "mlp_in", i)
        b.elt(p + "intermediate.act", tokens * ffn, act if act in ELTWISE_FLOPS else "gelu", layer=i)
        b.gemm(p + "output.dense", tokens, d, ffn, "mlp_out", i)
        b.elt(p + "output.add", tokens * d, "add", n_inputs=2, layer=i)
        b.elt(p + "output.LayerNorm", tokens * d, "layer_norm", layer=i)
    b.gemm("pooler.dense", batch, d, d, "head")  # on the [CLS] token of each sequence
    b.elt("pooler.act", batch * d, "tanh")


def _vit(b: _Ops, c: dict[str, Any], batch: int) -> int:
    d = _need(c, "hidden_size")
    heads = _need(c, "num_attention_heads")
    ffn = c.get("intermediate_size") or 4 * d
    layers = _need(c, "num_hidden_layers")
    img, patch = int(_need(c, "image_size")), int(_need(c, "patch_size"))
    ch = int(c.get("num_channels", 3))
    seq = (img // patch) ** 2 + 1  # patches + [CLS]
    tokens = batch * seq
    hd = d // heads
    geom = ConvGeom(batch, ch, img, img, d, patch, patch, stride=patch)
    op = Op.conv2d(geom, dtype=b.dtype, name="embeddings.patch_embeddings.projection")
    op.meta["role"] = "patch_embed"
    b.ops.append(op)
    b.elt("embeddings.add", tokens * d, "add", n_inputs=2)  # + position embeddings
    for i in range(layers):
        p = f"encoder.layer.{i}."
        b.elt(p + "layernorm_before", tokens * d, "layer_norm", layer=i)
        for proj in ("query", "key", "value"):
            b.gemm(f"{p}attention.attention.{proj}", tokens, d, d, "attn_in", i)
        b.attn(p + "attention.attention.attn", AttnGeom(batch, heads, seq, seq, hd), i)
        b.gemm(p + "attention.output.dense", tokens, d, d, "attn_out", i)
        b.elt(p + "residual", tokens * d, "add", n_inputs=2, layer=i)
        b.elt(p + "layernorm_after", tokens * d, "layer_norm", layer=i)
        b.gemm(p + "intermediate.dense", tokens, ffn, d, "mlp_in", i)
        b.elt(p + "intermediate.act", tokens * ffn, "gelu", layer=i)
        b.gemm(p + "output.dense", tokens, d, ffn, "mlp_out", i)
        b.elt(p + "residual2", tokens * d, "add", n_inputs=2, layer=i)
    b.elt("layernorm", tokens * d, "layer_norm")
    b.gemm("classifier", batch, int(c.get("num_labels", 1000)), d, "head")  # on the [CLS] token
    return seq
