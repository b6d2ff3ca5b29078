"""Transformer traces from a HF-style config (no weights, nothing downloaded).

Built-in configs live in workloads/configs/*.json (public config.json values). A user's own
config is a dict or a `transformers.PretrainedConfig` with the same field names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import AttnGeom, Op, Trace

CONFIG_DIR = Path(__file__).parent / "configs"
PHASES = ("prefill", "decode")


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config: str | dict[str, Any] | Any) -> tuple[str, dict[str, Any]]:
    """(name, config dict) from a built-in name, a dict, or a transformers config object."""
    if isinstance(name_or_config, str):
        path = CONFIG_DIR / f"{name_or_config.lower()}.json"
        if not path.exists():
            raise bad("model", name_or_config, ", ".join(config_names()))
        return name_or_config.lower(), json.loads(path.read_text())
    if isinstance(name_or_config, dict):
        return str(name_or_config.get("_name_or_path", "custom")), dict(name_or_config)
    if hasattr(name_or_config, "to_dict"):
        d = name_or_config.to_dict()
        return str(d.get("_name_or_path") or d.get("model_type", "custom")), d
    raise bad("model", type(name_or_config).__name__, "a built-in name, a dict or a transformers config")


def hf(name_or_config: str | dict[str, Any] | Any, batch: int = 1, seq_len: int = 128,
       phase: str = "prefill", kv_len: int | None = None, dtype: str = "fp16",
       include_lm_head: bool = True) -> Trace:
    """Decoder-only transformer trace: per layer q/k/v/o projections, attention, MLP, norms."""
    if phase not in PHASES:
        raise bad("phase", phase, ", ".join(PHASES))
    name, c = load_config(name_or_config)
    d = c["hidden_size"]
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    hd = c.get("head_dim") or d // heads
    ffn = c.get("intermediate_size") or c.get("ffn_dim") or 4 * d
    layers = c["num_hidden_layers"]
    gated = c.get("model_type") in ("llama", "mistral", "mixtral", "qwen2") or c.get("hidden_act") == "silu"
    q_len = seq_len if phase == "prefill" else 1
    ctx = kv_len if kv_len is not None else (seq_len if phase == "prefill" else seq_len)
    tokens = batch * q_len
    ops: list[Op] = []
    for i in range(layers):
        p = f"layers.{i}."
        ops.append(Op.eltwise(tokens * d, dtype=dtype, flops_per_elem=4, name=p + "input_norm"))
        ops.append(Op.gemm(tokens, heads * hd, d, dtype=dtype, name=p + "q_proj"))
        ops.append(Op.gemm(tokens, kv_heads * hd, d, dtype=dtype, name=p + "k_proj"))
        ops.append(Op.gemm(tokens, kv_heads * hd, d, dtype=dtype, name=p + "v_proj"))
        ops.append(Op.attention(AttnGeom(batch, heads, q_len, ctx, hd, kv_heads=kv_heads,
                                         causal=phase == "prefill"), dtype=dtype, name=p + "attn"))
        ops.append(Op.gemm(tokens, d, heads * hd, dtype=dtype, name=p + "o_proj"))
        ops.append(Op.eltwise(tokens * d, dtype=dtype, flops_per_elem=1, n_inputs=2, name=p + "residual"))
        ops.append(Op.eltwise(tokens * d, dtype=dtype, flops_per_elem=4, name=p + "post_norm"))
        if gated:
            ops.append(Op.gemm(tokens, ffn, d, dtype=dtype, name=p + "gate_proj"))
            ops.append(Op.gemm(tokens, ffn, d, dtype=dtype, name=p + "up_proj"))
            ops.append(Op.eltwise(tokens * ffn, dtype=dtype, flops_per_elem=5, n_inputs=2, name=p + "act_mul"))
        else:
            ops.append(Op.gemm(tokens, ffn, d, dtype=dtype, name=p + "fc1"))
            ops.append(Op.eltwise(tokens * ffn, dtype=dtype, flops_per_elem=1, name=p + "act"))
        ops.append(Op.gemm(tokens, d, ffn, dtype=dtype, name=p + ("down_proj" if gated else "fc2")))
        ops.append(Op.eltwise(tokens * d, dtype=dtype, flops_per_elem=1, n_inputs=2, name=p + "residual2"))
    if include_lm_head:
        ops.append(Op.gemm(tokens, c["vocab_size"], d, dtype=dtype, name="lm_head"))
    prov = {"model": name, "source": "config", "batch": batch, "seq_len": seq_len, "phase": phase,
            "kv_len": ctx, "dtype": dtype}
    return Trace(f"{name}-{phase}-b{batch}", tuple(ops), prov)
