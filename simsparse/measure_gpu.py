"""Measure dense and sparse GEMM kernels on the local CUDA GPU and write JSON lines.

Run on the device machine, from the repository root::

    PYTHONUNBUFFERED=1 python3 -m simsparse.measure_gpu --out $OUT/<campaign>.jsonl [--quick]

Imports only the standard library, numpy, torch, CuPy (optional, through the kernels module)
and ``simsparse.kernels.gpu``: the device machine has none of simsparse's other dependencies.

Method (shared/MEASURING.md):

* CUDA events around the kernel call only. Per point: the first call (plan / autotune /
  JIT) is excluded, then 5 warm-up calls, then ``--timed`` (>= 20) timed calls; the row keeps
  the median, min and max.
* L2 honest: before every timed call a buffer of 2x the device's L2 size is zeroed (outside
  the events), so neither weights nor activations are L2-resident, as in triton's do_bench.
* Host lead: after the flush a ``torch.cuda._sleep`` spin of 1.5x the call's measured host
  dispatch time (+50 us) is queued, so the kernel is already enqueued when the start event
  fires: ``t_s`` is device time, not host dispatch. A point whose median exceeds 1.3x its
  minimum (a host stall got into the events) is timed once more with twice the lead and the
  better attempt kept (``retimed``, ``t_s_attempts``). The host dispatch time of the call itself
  (perf_counter around the Python call, no sync) is kept as ``host_call_s``; when it exceeds
  ``t_s`` a stream of such calls is host-bound, which is what an eager torch user gets.
* Correctness: every output is compared in the same run with an fp32 product of the same
  (masked) weight on sampled rows (all N) and sampled columns (all M) (all of them when
  M, N <= 256); ``rel_err`` is the relative Frobenius error; ``ok`` is false above 1e-2
  (fp16/bf16) or 1e-4 (fp32), or when any output element is not finite.
* Machine identity, library versions and the SM / memory clocks (``nvidia-smi``, sampled
  while each shape group runs) go into every row. Each row is written and flushed as soon as
  it is measured.

Slow sparse points are capped: a point whose second call takes longer than ``--cap-ms`` is
recorded as ``skipped`` and larger M of the same series are skipped (predicted from the last
measured M). Phases run in priority order under soft deadlines so one device call of
``--budget-s`` always returns dense + 2:4 for every shape.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import warnings
import zlib
from collections import Counter, defaultdict

import numpy as np

try:
    import torch
except ImportError:  # the schema constants stay importable without torch
    torch = None

SCHEMA_VERSION = 1

# fields every measurement row (kind "gemm" / "gemv") carries; error / skipped rows carry
# them too, with t_s = None and ok = False
MACHINE_FIELDS = (
    "device", "sm_count", "l2_bytes", "cc", "driver", "cuda", "torch", "cupy", "cusparselt",
    "clock_sm_mhz", "clock_mem_mhz",
)
ROW_FIELDS = (
    "schema", "campaign", "date", "kind", "kernel", "variant", "call", "dtype", "layout",
    "m", "n", "k", "pattern", "density", "block", "t_s", "t_min_s", "t_max_s", "n_timed",
    "rel_err", "ok", "timing",
)
REQUIRED_FIELDS = ROW_FIELDS + MACHINE_FIELDS
CEILING_FIELDS = ("schema", "campaign", "date", "kind", "kernel", "call", "value", "unit")
TOLERANCE = {"fp16": 1e-2, "bf16": 1e-2, "fp32": 1e-4}

# ------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------

# (model, layer, N, K): GEMM weight shapes W[N, K]
LLM_SHAPES = [
    ("opt-1.3b", "attn_qkvo", 2048, 2048),
    ("opt-1.3b", "fc1", 8192, 2048),
    ("opt-1.3b", "fc2", 2048, 8192),
    ("llama-2-7b/opt-6.7b", "attn_qkvo", 4096, 4096),
    ("llama-2-7b", "mlp_gate_up", 11008, 4096),
    ("llama-2-7b", "mlp_down", 4096, 11008),
    ("opt-6.7b", "fc1", 16384, 4096),
    ("llama-2-13b", "attn_qkvo", 5120, 5120),
    ("llama-2-13b", "mlp_gate_up", 13824, 5120),
    ("llama-2-13b", "mlp_down", 5120, 13824),
    ("llama-2-70b", "attn_qo", 8192, 8192),
    ("llama-2-70b", "mlp_gate_up", 28672, 8192),
    ("llama-2-70b", "mlp_down", 8192, 28672),
    ("llama-2-70b", "attn_kv_gqa", 1024, 8192),
    ("llama-3-8b/mixtral", "mlp_gate_up", 14336, 4096),
    ("llama-3-8b/mixtral", "mlp_down", 4096, 14336),
    ("llama-3-8b", "attn_kv_gqa", 1024, 4096),
    ("opt-125m/bert-base", "attn_qkvo", 768, 768),
    ("opt-125m/bert-base", "fc1", 3072, 768),
    ("opt-125m/bert-base", "fc2", 768, 3072),
]
LLM_M = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
LLM_M_SPARSE = {1, 8, 16, 64, 128, 512, 2048, 8192}  # CSR / BSR / CuPy series

# ResNet-50 convolutions lowered to GEMM (im2col): N = out channels, K = in channels * kh * kw
RESNET_SHAPES = [
    ("resnet-50", "conv3x3_c64", 64, 576),
    ("resnet-50", "conv3x3_c128", 128, 1152),
    ("resnet-50", "conv3x3_c256", 256, 2304),
    ("resnet-50", "conv3x3_c512", 512, 4608),
    ("resnet-50", "conv1x1_1024to256", 256, 1024),
    ("resnet-50", "conv1x1_256to1024", 1024, 256),
    ("resnet-50", "conv1x1_512to2048", 2048, 512),
    ("resnet-50", "conv1x1_2048to512", 512, 2048),
]
# batch*H*W: 28x28, 2*28x28, 56x56, 32*14x14, 112x112 (= 4*56x56), 8*56x56
RESNET_M = [784, 1568, 3136, 6272, 12544, 25088]
RESNET_M_SPARSE = {784, 3136, 6272, 12544}

PHASES = ("ceilings", "dense24", "act", "csr", "bsr", "cupy", "bsr32", "attn", "moe")
# MoE expert layers (model, layer, experts, N, K) for one grouped GEMM over ragged token groups,
# at routed-token totals MOE_TOKENS, balanced (skew 0) or Dirichlet-skewed (skew 1, 3)
MOE_LAYERS = [("mixtral-8x7b", "w1w3", 8, 28672, 4096), ("mixtral-8x7b", "w2", 8, 4096, 14336),
              ("deepseek-v2-lite", "gate_up", 64, 2816, 2048), ("deepseek-v2-lite", "down", 64, 2048, 1408),
              ("olmoe-1b-7b", "gate_up", 64, 2048, 2048), ("olmoe-1b-7b", "down", 64, 2048, 1024)]
MOE_TOKENS = (64, 512, 4096, 16384)
MOE_SKEWS = (0.0, 1.0, 3.0)
# fused attention geometries (batch, heads, kv_heads, q_len, kv_len, head_dim, causal): prefill of
# one sequence and of a batch (MHA and GQA 4:1, head_dim 64 and 128, causal or not) and decode
# (one query token against a KV cache, as serving runs it)
ATTN_GEOMS = (
    [(1, 32, kvh, L, L, d, c) for kvh in (32, 8) for L in (512, 1024, 2048, 4096, 8192) for d in (64, 128)
     for c in (False, True)]
    + [(8, 32, kvh, L, L, d, c) for kvh in (32, 8) for L in (512, 2048) for d in (64, 128) for c in (False, True)]
    + [(b, 32, kvh, 1, kv, 128, False) for kvh in (32, 8) for kv in (512, 2048, 8192, 32768) for b in (1, 16, 64)])
ATTN_VARIANTS = ("sdpa_flash", "sdpa_cudnn")
CSR_DENSITIES = [0.5, 0.3, 0.1, 0.05, 0.01]
BSR_DENSITIES = [0.5, 0.2, 0.1, 0.05]
BSR_BLOCKS = [16, 32]
ACT_DENSITIES = [1.0, 0.5, 0.25, 0.1]
CUPY_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 8192), (3072, 768),
               (768, 3072), (2048, 2048), (256, 2304), (1024, 256)]
CUPY_DENSITIES = [0.1, 0.05, 0.01]
CUPY_M = {1, 16, 128, 512, 2048, 784, 3136}
SEARCH_MAX_DENSE_S = 2e-3
RETIME_RATIO = 1.3  # median / min above this: time the point once more  # run cuSPARSELt's algorithm search only where dense takes < 2 ms

# ceilings: (copy bytes, GEMM size) for the full and the quick grid
CEILING_SIZES = {"full": (2 << 30, 8192), "quick": (256 << 20, 4096)}

# a second campaign on shapes the first never saw (other model families), for a truly unseen
# check of a model calibrated on the first: same M grids, same split rule
NEW_LLM_SHAPES = [
    ("qwen2-7b", "attn_qo", 3584, 3584),
    ("qwen2-7b", "mlp_gate_up", 18944, 3584),
    ("qwen2-7b", "mlp_down", 3584, 18944),
    ("qwen2-7b", "attn_kv_gqa", 512, 3584),
    ("falcon-7b", "attn_qkv", 4672, 4544),
    ("falcon-7b", "mlp_up", 18176, 4544),
    ("falcon-7b", "mlp_down", 4544, 18176),
    ("phi-3-mini", "attn_qkvo", 3072, 3072),
    ("phi-3-mini", "mlp_gate_up", 16384, 3072),
    ("phi-3-mini", "mlp_down", 3072, 8192),
    ("gpt2-xl", "fc1", 6400, 1600),
    ("gpt2-xl", "fc2", 1600, 6400),
    ("gemma-2-9b", "mlp_gate_up", 14336, 3584),
    ("gemma-2-9b", "mlp_down", 3584, 14336),
]
NEW_CONV_SHAPES = [
    ("mobilenet-v2", "expand_64to384", 384, 64),
    ("mobilenet-v2", "project_384to64", 64, 384),
    ("mobilenet-v2", "expand_160to960", 960, 160),
    ("mobilenet-v2", "project_960to160", 160, 960),
    ("resnet-18", "conv3x3_256to512", 512, 2304),
    ("vgg-16", "conv3x3_64to128", 128, 576),
]
# a third set, for an unseen check of the model after its last calibration round
NEW2_LLM_SHAPES = [
    ("yi-34b", "attn_qo", 7168, 7168),
    ("yi-34b", "mlp_gate_up", 20480, 7168),
    ("yi-34b", "mlp_down", 7168, 20480),
    ("qwen2-1.5b", "attn_qo", 1536, 1536),
    ("qwen2-1.5b", "mlp_gate_up", 8960, 1536),
    ("qwen2-1.5b", "mlp_down", 1536, 8960),
    ("qwen2-1.5b", "attn_kv_gqa", 256, 1536),
    ("gemma-2b", "mlp_gate_up", 16384, 2048),
    ("gemma-2b", "mlp_down", 2048, 16384),
    ("starcoder2-15b", "attn_qo", 6144, 6144),
    ("starcoder2-15b", "mlp_up", 24576, 6144),
    ("starcoder2-15b", "mlp_down", 6144, 24576),
    ("bert-large", "fc1", 4096, 1024),
    ("bert-large", "attn_qkvo", 1024, 1024),
]
NEW2_CONV_SHAPES = [
    ("mobilenet-v1", "pw_512to512", 512, 512),
    ("mobilenet-v1", "pw_512to1024", 1024, 512),
    ("efficientnet-b0", "expand_192to1152", 1152, 192),
    ("efficientnet-b0", "project_1152to192", 192, 1152),
    ("densenet-121", "bottleneck_256to128", 128, 256),
]

# a fourth set (unseen check #3), measured after the calibration that used the kernel probe
NEW3_LLM_SHAPES = [
    ("opt-2.7b", "attn_qkvo", 2560, 2560),
    ("opt-2.7b", "fc1", 10240, 2560),
    ("opt-2.7b", "fc2", 2560, 10240),
    ("qwen2-72b", "mlp_gate_up", 29568, 8192),
    ("qwen2-72b", "mlp_down", 8192, 29568),
    ("phi-3-medium", "mlp_gate_up", 17920, 5120),
    ("phi-3-medium", "mlp_down", 5120, 17920),
    ("deepseek-v2-lite", "mlp_gate_up", 10944, 2048),
    ("deepseek-v2-lite", "mlp_down", 2048, 10944),
    ("gemma-7b", "mlp_gate_up", 24576, 3072),
    ("gemma-7b", "mlp_down", 3072, 24576),
    ("gemma-7b", "attn_q", 4096, 3072),
    ("flan-t5-large", "ff_in", 2816, 1024),
    ("flan-t5-large", "ff_out", 1024, 2816),
]
NEW3_CONV_SHAPES = [
    ("convnext-t", "pw_384to1536", 1536, 384),
    ("convnext-t", "pw_1536to384", 384, 1536),
    ("shufflenet-v2", "pw_464", 464, 464),
    ("regnety-1.6g", "pw_888", 888, 888),
    ("mobilenet-v3-large", "project_672to112", 112, 672),
]

# a fifth set (unseen check #4), measured before the round-8 model changes and kept out of
# every fit: shapes no earlier set has
NEW4_LLM_SHAPES = [
    ("mistral-nemo-12b", "mlp_gate_up", 14336, 5120),
    ("mistral-nemo-12b", "mlp_down", 5120, 14336),
    ("mistral-nemo-12b", "attn_q", 4096, 5120),
    ("internlm2-20b", "mlp_up", 16384, 6144),
    ("whisper-large", "fc1", 5120, 1280),
    ("whisper-large", "fc2", 1280, 5120),
    ("llama-3.1-405b", "attn_qo", 16384, 16384),
    ("gpt2", "c_attn", 2304, 768),
    ("qwen2.5-3b", "mlp_gate_up", 11008, 2048),
    ("qwen2.5-3b", "mlp_down", 2048, 11008),
    ("gemma-2-27b", "mlp_gate_up", 36864, 4608),
    ("gemma-2-27b", "mlp_down", 4608, 36864),
    ("gemma-2-27b", "attn_qo", 4608, 4608),
    ("tinyllama-1.1b", "mlp_gate_up", 5632, 2048),
    ("tinyllama-1.1b", "mlp_down", 2048, 5632),
]
NEW4_CONV_SHAPES = [
    ("inception-v3", "pw_768to192", 192, 768),
    ("inception-v3", "pw_2048to320", 320, 2048),
    ("efficientnet-b4", "expand_272to1632", 1632, 272),
    ("efficientnet-b4", "project_1632to272", 272, 1632),
]

# a sixth set (unseen check #5), measured before session 4's model changes and kept out of every
# fit: shapes no earlier set (the probe grid included) has
NEW5_LLM_SHAPES = [
    ("llama-3.2-3b", "mlp_gate_up", 8192, 3072),
    ("command-r-35b", "mlp_gate_up", 22528, 8192),
    ("command-r-35b", "mlp_down", 8192, 22528),
    ("stablelm-3b", "mlp_gate_up", 6912, 2560),
    ("stablelm-3b", "mlp_down", 2560, 6912),
    ("granite-3-8b", "mlp_gate_up", 12800, 4096),
    ("granite-3-8b", "mlp_down", 4096, 12800),
    ("minicpm-2b", "mlp_gate_up", 5760, 2304),
    ("minicpm-2b", "mlp_down", 2304, 5760),
    ("phi-3.5-moe", "expert_up", 6400, 4096),
    ("phi-3.5-moe", "expert_down", 4096, 6400),
    ("baichuan2-13b", "mlp_gate_up", 13696, 5120),
    ("chatglm3-6b", "mlp_down", 4096, 13696),
    ("t5-3b", "ff_out", 1024, 16384),
    ("dbrx", "expert_up", 10752, 6144),
]
NEW5_CONV_SHAPES = [
    ("densenet-121", "transition_512to256", 256, 512),
    ("mobilenet-v2", "expand_96to576", 576, 96),
    ("regnety-800mf", "pw_320", 320, 320),
    ("mnasnet", "project_480to80", 80, 480),
]

# a seventh set (unseen check #6), measured after session 4's round-9 model changes and kept out
# of every fit: shapes no earlier set has
NEW6_LLM_SHAPES = [
    ("mistral-small-24b", "mlp_gate_up", 32768, 5120),
    ("mistral-small-24b", "mlp_down", 5120, 32768),
    ("qwen3-30b-a3b", "expert_up", 768, 2048),
    ("qwen3-30b-a3b", "expert_down", 2048, 768),
    ("gemma-3-12b", "mlp_gate_up", 15360, 3840),
    ("gemma-3-12b", "mlp_down", 3840, 15360),
    ("gemma-3-12b", "attn_q", 4096, 3840),
    ("llama-4-scout", "expert_up", 8192, 5120),
    ("llama-4-scout", "expert_down", 5120, 8192),
    ("deepseek-v3", "expert_up", 2048, 7168),
    ("deepseek-v3", "expert_down", 7168, 2048),
    ("nemotron-mini-4b", "mlp_up", 9216, 3072),
    ("nemotron-mini-4b", "mlp_down", 3072, 9216),
    ("qwen3-8b", "mlp_down", 4096, 12288),
]
NEW6_CONV_SHAPES = [
    ("mobilenet-v3-small", "project_576to96", 96, 576),
    ("efficientnet-b3", "expand_232to1392", 1392, 232),
    ("efficientnet-b3", "project_1392to232", 232, 1392),
    ("regnety-3.2g", "pw_576", 576, 576),
]


def _fit_half(n: int, k: int) -> bool:
    """simsparse.validate.half_of's rule (crc32 of "NxK" even → fit), restated here because
    this module runs on the device machine without simsparse's dependencies."""
    return zlib.crc32(f"{int(n)}x{int(k)}".encode()) % 2 == 0


# a probe of cuSPARSELt's kernel choice (with --profile-kernels): a regular N x K grid plus the
# earlier campaigns' shapes, **fit half only** (the split rule above), so what the launched
# kernels teach the model never comes from a held-out shape
PROBE_N = [256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576]
PROBE_K = [512, 1024, 2048, 4096, 8192, 16384]
_EARLIER_LLM = [s for s in LLM_SHAPES + NEW_LLM_SHAPES + NEW2_LLM_SHAPES if _fit_half(*s[2:])]
PROBE_LLM_SHAPES = _EARLIER_LLM + [
    ("probe-grid", f"{n}x{k}", n, k) for n in PROBE_N for k in PROBE_K
    if _fit_half(n, k) and (n, k) not in {s[2:] for s in _EARLIER_LLM}]
PROBE_CONV_SHAPES = [(mdl, lyr, n, k) for mdl, lyr, n, k in RESNET_SHAPES + NEW_CONV_SHAPES
                     + NEW2_CONV_SHAPES if _fit_half(n, k)]
SHAPE_SETS = {"main": (LLM_SHAPES, RESNET_SHAPES), "new": (NEW_LLM_SHAPES, NEW_CONV_SHAPES),
              "new2": (NEW2_LLM_SHAPES, NEW2_CONV_SHAPES),
              "probe": (PROBE_LLM_SHAPES, PROBE_CONV_SHAPES), "new3": (NEW3_LLM_SHAPES, NEW3_CONV_SHAPES),
              "new4": (NEW4_LLM_SHAPES, NEW4_CONV_SHAPES),
              "new5": (NEW5_LLM_SHAPES, NEW5_CONV_SHAPES),
              "new6": (NEW6_LLM_SHAPES, NEW6_CONV_SHAPES)}
# a second probe (session 4): narrow layers with a long K (N 512-2560, K 10240-32768), where the
# default 2:4 plan's segment-K split decides; fit half only, no shape an earlier set has
_SEEN = {s[2:] for llm, conv in SHAPE_SETS.values() for s in llm + conv}
SHAPE_SETS["probe2"] = ([("probe-narrow-long-k", f"{n}x{k}", n, k)
                         for n in (512, 768, 1024, 1280, 1536, 2048, 2560)
                         for k in (10240, 12288, 14336, 16384, 20480, 24576, 32768)
                         if _fit_half(n, k) and (n, k) not in _SEEN], [])
PROBE2_LLM_SHAPES = SHAPE_SETS["probe2"][0]

QUICK_LLM = [("llama-2-7b/opt-6.7b", "attn_qkvo", 4096, 4096),
             ("opt-125m/bert-base", "fc2", 768, 3072)]
QUICK_RESNET = [("resnet-50", "conv3x3_c64", 64, 576)]


def all_shapes(quick: bool, shape_set: str = "main"):
    """(model, layer, N, K, [M...]) in a fixed order that interleaves LLM and conv shapes,
    so a phase cut short by its deadline still spans both families."""
    llm = QUICK_LLM if quick else SHAPE_SETS[shape_set][0]
    conv = QUICK_RESNET if quick else SHAPE_SETS[shape_set][1]
    llm_m = [1, 16, 512] if quick else LLM_M
    conv_m = [784] if quick else RESNET_M
    out = []
    for i in range(max(len(llm), len(conv))):
        if i < len(llm):
            out.append((*llm[i], llm_m))
        if i < len(conv):
            out.append((*conv[i], conv_m))
    return out


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------
# machine identity and clocks
# ------------------------------------------------------------------------------------------


def _smi(query: str) -> list[str] | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip().splitlines()
        return [s.strip() for s in out[0].split(",")] if out else None
    except Exception:  # noqa: BLE001 - no nvidia-smi here
        return None


class ClockSampler:
    """nvidia-smi clocks.sm / clocks.mem, sampled asynchronously while a group runs."""

    QUERY = "clocks.sm,clocks.mem,temperature.gpu,power.draw"

    def __init__(self):
        self.proc = None
        self.last = {"clock_sm_mhz": None, "clock_mem_mhz": None, "temp_c": None,
                     "power_w": None}

    def start(self):
        if self.proc is not None:
            self.collect()
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        except Exception:  # noqa: BLE001
            self.proc = None

    def collect(self) -> dict:
        if self.proc is not None:
            try:
                out, _ = self.proc.communicate(timeout=20)
                vals = [v.strip() for v in out.strip().splitlines()[0].split(",")]
                self.last = {
                    "clock_sm_mhz": _num(vals[0]), "clock_mem_mhz": _num(vals[1]),
                    "temp_c": _num(vals[2]), "power_w": _num(vals[3]),
                }
            except Exception:  # noqa: BLE001
                pass
            self.proc = None
        return dict(self.last)


def _num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def machine_identity(kg) -> dict:
    props = torch.cuda.get_device_properties(0)
    smi = _smi("name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,memory.total") or []
    ident = {
        "device": props.name,
        "sm_count": props.multi_processor_count,
        "l2_bytes": int(getattr(props, "L2_cache_size", 0)),
        "hbm_bytes": int(props.total_memory),
        "cc": f"{props.major}.{props.minor}",
        "driver": smi[1] if len(smi) > 1 else None,
        "clock_max_sm_mhz": _num(smi[2]) if len(smi) > 2 else None,
        "clock_max_mem_mhz": _num(smi[3]) if len(smi) > 3 else None,
        "power_limit_w": _num(smi[4]) if len(smi) > 4 else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "cupy": getattr(kg.cupy, "__version__", None) if kg.cupy is not None else None,
        "cusparselt": kg.cusparselt_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }
    if kg.cupy is not None:
        try:
            ident["cuda_runtime_cupy"] = kg.cupy.cuda.runtime.runtimeGetVersion()
        except Exception:  # noqa: BLE001
            pass
    return ident


def device_slug(name: str) -> str:
    s = name.lower().replace("nvidia", "").strip()
    return "-".join("".join(c if c.isalnum() else " " for c in s).split()) or "gpu"


# ------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------


class RowWriter:
    def __init__(self, path: str, common: dict, clocks: ClockSampler, echo: bool):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.common = common
        self.clocks = clocks
        self.echo = echo
        self.counts = Counter()
        self.rows: list[dict] = []

    def write(self, row: dict) -> dict:
        full = {"schema": SCHEMA_VERSION, **self.common, **self.clocks.last, **row}
        full["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.f.write(json.dumps(full, default=_json_default) + "\n")
        self.f.flush()
        key = (full.get("kernel"), full.get("variant"), full.get("dtype"))
        status = ("ceil" if full.get("kind") == "ceiling" else "err" if full.get("error")
                  else "skip" if full.get("skipped") else "ok" if full.get("ok") else "BAD")
        self.counts[(*key, status)] += 1
        self.rows.append({k: full.get(k) for k in (
            "kind", "kernel", "variant", "dtype", "m", "n", "k", "pattern", "density", "block",
            "t_s", "ok", "rel_err", "host_call_s", "value", "unit", "error", "skipped")})
        if self.echo or full.get("error"):
            print(_fmt_row(full), flush=True)
        return full

    def close(self):
        self.f.close()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _fmt_row(r: dict) -> str:
    if r.get("kind") == "ceiling":
        return f"  ceiling {r['kernel']:<22} {r.get('value')} {r.get('unit')}"
    t = r.get("t_s")
    ts = f"{t * 1e6:10.1f}us" if t else f"{'-':>12}"
    host = r.get("host_call_s")
    hs = f"host {host * 1e6:7.1f}us" if host else ""
    extra = r.get("error") or r.get("skipped") or ""
    err = r.get("rel_err")
    es = f"err {err:.1e}" if isinstance(err, float) else ""
    return (f"  {r.get('kernel', ''):<12} {r.get('variant', ''):<28} {r.get('dtype', ''):<4} "
            f"m={r.get('m')} n={r.get('n')} k={r.get('k')} {r.get('pattern')} "
            f"d={r.get('density')} b={r.get('block')} {ts} {hs} {es} "
            f"{'' if r.get('ok') else 'NOT-OK'} {str(extra)[:160]}")


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------


class Timer:
    """CUDA-event timing with an L2 flush and a host lead before every timed call."""

    def __init__(self, l2_bytes: int, n_warmup: int, n_timed: int, sleep_hz: float,
                 device: str = "cuda"):
        self.flush_bytes = max(2 * l2_bytes, 64 << 20)
        self.flush_buf = torch.empty(self.flush_bytes // 4, dtype=torch.int32, device=device)
        self.n_warmup = n_warmup
        self.n_timed = n_timed
        self.sleep_hz = sleep_hz

    def _once(self, fn) -> float:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) * 1e-3

    def time(self, fn, cap_s: float | None = None, flush: bool = True) -> dict:
        """Time fn; if the median is more than RETIME_RATIO x the minimum (a host stall or a
        neighbour's burst got into the events), time it once more with twice the host lead
        and keep the attempt with the lower median (both medians are recorded)."""
        res = self._time(fn, cap_s, flush, lead_scale=1.0)
        if "t_s" in res and res["t_s"] > RETIME_RATIO * res["t_min_s"]:
            again = self._time(fn, None, flush, lead_scale=2.0)
            attempts = [res["t_s"], again["t_s"]]
            if again["t_s"] < res["t_s"]:
                res = again
            res["retimed"] = True
            res["t_s_attempts"] = attempts
        return res

    def _time(self, fn, cap_s, flush, lead_scale: float) -> dict:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t_first = self._once(fn)  # plan / autotune / JIT: excluded
        first_warnings = sorted({str(w.message)[:200] for w in caught})
        t_probe = self._once(fn)  # warm-up 1
        if cap_s is not None and t_probe > cap_s:
            return {"skipped": f"one launch took {t_probe:.4g} s > cap {cap_s:.3g} s",
                    "t_first_s": t_first, "t_probe_s": t_probe,
                    "first_call_warnings": first_warnings}
        host = []
        for _ in range(self.n_warmup - 1):  # warm-ups 2..n
            h0 = time.perf_counter()
            fn()
            host.append(time.perf_counter() - h0)
        torch.cuda.synchronize()
        lead_s = lead_scale * min(1.5 * statistics.median(host) + 50e-6, 5e-3)
        cycles = int(lead_s * self.sleep_hz)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(self.n_timed)]
        host_calls = []
        for s, e in events:
            if flush:
                self.flush_buf.zero_()
            torch.cuda._sleep(cycles)
            s.record()
            h0 = time.perf_counter()
            fn()
            host_calls.append(time.perf_counter() - h0)
            e.record()
        torch.cuda.synchronize()
        ts = sorted(s.elapsed_time(e) * 1e-3 for s, e in events)
        return {
            "t_s": statistics.median(ts), "t_min_s": ts[0], "t_max_s": ts[-1],
            "n_timed": len(ts), "n_warmup": self.n_warmup, "t_first_s": t_first,
            "host_call_s": statistics.median(host_calls), "host_call_max_s": max(host_calls),
            "lead_s": lead_s,
            "timing": "cuda_events+l2flush+hostlead" if flush else "cuda_events+hostlead",
            "flush_bytes": self.flush_bytes if flush else 0,
            "first_call_warnings": first_warnings,
        }

    def idle_latency(self, fn, n: int = 20) -> float:
        """Events around one call on an idle GPU: includes host dispatch and launch latency."""
        return statistics.median(self._once(fn) for _ in range(n))

    def back_to_back(self, fn, n: int = 1000) -> tuple[float, float]:
        """(device time per call, host time per call) for n calls issued back to back."""
        fn()
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        h0 = time.perf_counter()
        for _ in range(n):
            fn()
        h1 = time.perf_counter()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) * 1e-3 / n, (h1 - h0) / n


# ------------------------------------------------------------------------------------------
# the campaign
# ------------------------------------------------------------------------------------------


class Campaign:
    def __init__(self, args, kg):
        self.args = args
        self.kg = kg
        self.t0 = time.monotonic()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.ident = machine_identity(kg)
        self.n_sm = self.ident["sm_count"]
        sleep_hz = (self.ident.get("clock_max_sm_mhz") or 1980.0) * 1e6
        self.timer = Timer(self.ident["l2_bytes"], args.warmup, args.timed, sleep_hz,
                           device=kg.DEVICE)
        self.clocks = ClockSampler()
        self.clocks.start()
        self.clocks.collect()
        date = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
        self.campaign = args.campaign or f"{device_slug(self.ident['device'])}-gemm-sparse-{date}"
        common = {"campaign": self.campaign, **self.ident, "tf32": False}
        self.w = RowWriter(args.out, common, self.clocks, echo=args.quick or args.verbose)
        self.cublas_done: set[tuple] = set()
        self.disabled: dict[str, str] = {}  # variant -> reason, after a hard API failure
        print(f"campaign {self.campaign} on {self.ident['device']} ({self.n_sm} SMs, L2 "
              f"{self.ident['l2_bytes'] / 2**20:.0f} MiB), torch {self.ident['torch']}, CUDA "
              f"{self.ident['cuda']}, cuSPARSELt {self.ident['cusparselt']}, CuPy "
              f"{self.ident['cupy']}, driver {self.ident['driver']}", flush=True)

    # -- helpers ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def past(self, frac: float) -> bool:
        return self.elapsed() > frac * self.args.budget_s

    def group(self):
        """Start a new clock sample for the group about to run (rows take the last one)."""
        self.clocks.collect()
        self.clocks.start()

    def base(self, kind, m, n, k, pattern, density, block, **kw) -> dict:
        return {"kind": kind, "m": m, "n": n, "k": k, "pattern": pattern, "density": density,
                "block": block, **kw}

    def error_row(self, base: dict, what, exc: BaseException, dtype: str | None = None) -> dict:
        """Row for a call that raised. ``what`` is a Prepared or a tagged prepare_* function."""
        layout = getattr(what, "layout", None)
        dtype = getattr(what, "dtype", None) or dtype
        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return self.w.write({**base, "kernel": what.kernel, "variant": what.variant,
                             "call": what.call, "dtype": dtype, "layout": layout, "t_s": None,
                             "t_min_s": None, "t_max_s": None, "n_timed": 0, "rel_err": None,
                             "ok": False, "timing": None, "error": msg[:400]})

    def skip_row(self, base: dict, what, dtype: str, reason: str, **extra) -> dict:
        return self.w.write({**base, "kernel": what.kernel, "variant": what.variant,
                             "call": what.call, "dtype": dtype,
                             "layout": getattr(what, "layout", None), "t_s": None,
                             "t_min_s": None, "t_max_s": None, "n_timed": 0, "rel_err": None,
                             "ok": False, "timing": None, **extra, "skipped": reason})

    def measure(self, base: dict, prep, ref, cap_s: float | None = None) -> dict:
        """Time one prepared call, check it against the reference, write the row."""
        try:
            res = self.timer.time(prep.fn, cap_s=cap_s)
            if "skipped" in res:
                reason = res.pop("skipped")
                return self.skip_row(base, prep, prep.dtype, reason, **prep.extra, **res)
            if prep.kernel in ("cublas", "cusparselt") and prep.variant != "semi_structured_linear":
                res.update(self.launched(prep))
            out = prep.fn()
            y = prep.as_y(out)
            rows, cols, ref_r, ref_c = ref
            err, finite = self.kg.relative_error(y, rows, cols, ref_r, ref_c)
            tol = TOLERANCE[prep.dtype]
            ok = bool(finite and err <= tol)
            check = ("full" if rows.numel() == y.shape[0] and cols.numel() == y.shape[1]
                     else f"sampled rows={rows.numel()} cols={cols.numel()}")
            return self.w.write({**base, "kernel": prep.kernel, "variant": prep.variant,
                                 "call": prep.call, "dtype": prep.dtype, "layout": prep.layout,
                                 **res, "rel_err": err, "finite": finite, "ok": ok,
                                 "tolerance": tol, "check": check, **prep.extra})
        except Exception as exc:  # noqa: BLE001 - recorded, the campaign goes on
            return self.error_row(base, prep, exc)

    def launched(self, prep) -> dict:
        """With --profile-kernels: the kernels one call of `prep` launches (or why not)."""
        if not self.args.profile_kernels:
            return {}
        try:
            return {"kernels": self.kg.launched_kernels(prep.fn)}
        except Exception as exc:  # noqa: BLE001 - the timing stands without it
            return {"kernels_error": f"{type(exc).__name__}: {exc}"[:300]}

    def measure_fused(self, base: dict, tag, dtype: str, make, check, desc: str) -> dict:
        """Time the call `make()` prepares, verify its output with `check(out) -> (rel_err,
        finite)` (described by `desc`), write the row; a call that raises gets an error row
        naming `tag` (the tagged prepare function)."""
        try:
            prep = make()
            res = self.timer.time(prep.fn, cap_s=self.args.cap_ms * 1e-3)
            if "skipped" in res:
                return self.skip_row(base, prep, dtype, res.pop("skipped"), **res)
            res.update(self.launched(prep))
            err, finite = check(prep.fn())
            tol = TOLERANCE[dtype]
            return self.w.write({**base, "kernel": prep.kernel, "variant": prep.variant, "call": prep.call,
                                 "dtype": dtype, "layout": prep.layout, **res, "rel_err": err, "finite": finite,
                                 "ok": bool(finite and err <= tol), "tolerance": tol, "check": desc})
        except Exception as exc:  # noqa: BLE001 - recorded, the campaign goes on
            return self.error_row(base, tag, exc, dtype=dtype)

    def reference(self, x, wm, seed):
        """Sampled rows/cols and their fp32 reference products of the masked weight."""
        m, n = x.shape[0], wm.shape[0]
        g = self.kg.generator(seed)
        dev = self.kg.DEVICE
        rows = (torch.arange(m, device=dev) if m <= 256
                else torch.randperm(m, generator=g, device=dev)[:256].sort().values)
        cols = (torch.arange(n, device=dev) if n <= 256
                else torch.randperm(n, generator=g, device=dev)[:256].sort().values)
        ref_r, ref_c = self.kg.reference_rows(x, wm, rows, cols)
        return rows, cols, ref_r, ref_c

    def ensure_cublas(self, x, w, m, n, k, model_tag):
        """The dense comparator row for (m, n, k, dtype) of a sparse row, measured once."""
        key = (m, n, k, self.kg.dtype_name(w.dtype))
        if key in self.cublas_done:
            return
        base = self.base("gemm", m, n, k, "dense", 1.0, None, shape=model_tag)
        ref = self.reference(x, w, seed_of("rows", m, n))
        row = self.measure(base, self.kg.prepare_cublas(x, w), ref)
        if row.get("t_s") is not None:
            self.cublas_done.add(key)

    # -- phases ----------------------------------------------------------------------------

    def ceilings(self):
        kg, q = self.kg, self.args.quick
        self.group()
        rows = []
        # 1. device-to-device copy: bytes read + written over time (no flush: 16x L2 or more)
        nbytes, sz = CEILING_SIZES["quick" if q else "full"]
        fn, moved = kg.prepare_copy(nbytes)
        r = self.timer.time(fn, flush=False)
        rows.append({"kernel": "d2d_copy", "call": f"dst.copy_(src) fp16, {nbytes} B",
                     "value": moved / r["t_s"] / 1e9, "unit": "GB/s (read+written)",
                     "bytes_moved": moved, **r})
        del fn
        torch.cuda.empty_cache()
        # 2. big dense GEMM rate on random normal data
        for dt in ("bf16", "fp16"):
            x = kg.randn((sz, sz), kg.DTYPES[dt], 1)
            w = kg.randn((sz, sz), kg.DTYPES[dt], 2)
            r = self.timer.time(lambda x=x, w=w: torch.nn.functional.linear(x, w), flush=False)
            rows.append({"kernel": f"gemm_{sz}^3_{dt}", "dtype": dt,
                         "call": "torch.nn.functional.linear(x, W) (random normal)",
                         "value": 2 * sz**3 / r["t_s"] / 1e12, "unit": "TFLOP/s",
                         "m": sz, "n": sz, "k": sz, **r})
            del x, w
        # 3. fixed costs: empty kernel and a tiny cuBLAS GEMM
        x = kg.randn((16, 64), torch.float16, 3)
        w = kg.randn((64, 64), torch.float16, 4)
        launches = [("empty_kernel_torch", *kg.prepare_empty_kernel("torch")),
                    ("tiny_cublas_16x64x64", lambda: torch.nn.functional.linear(x, w),
                     "torch.nn.functional.linear(x[16,64], W[64,64]) fp16")]
        if kg.cupy is not None:
            try:
                launches.append(("empty_kernel_cupy", *kg.prepare_empty_kernel("cupy")))
            except Exception as exc:  # noqa: BLE001
                print(f"  cupy empty kernel unavailable: {exc}", flush=True)
        for name, fn, call in launches:
            r = self.timer.time(fn, flush=False)
            idle = self.timer.idle_latency(fn)
            b2b_dev, b2b_host = self.timer.back_to_back(fn)
            base = {"kernel": name, "call": call, "unit": "s"}
            rows.append({**base, "metric": "device_time_events_hostlead", "value": r["t_s"], **r})
            rows.append({**base, "metric": "idle_gpu_call_latency_events", "value": idle})
            rows.append({**base, "metric": "back_to_back_device_per_call", "value": b2b_dev})
            rows.append({**base, "metric": "back_to_back_host_per_call", "value": b2b_host})
        for row in rows:
            self.w.write({"kind": "ceiling", **row})

    def phase_dense_24(self, shapes, frac):
        """cuBLAS fp16/bf16 and cuSPARSELt 2:4 (three call paths) at every (N, K, M)."""
        kg = self.kg
        for model, layer, n, k, ms in shapes:
            if self.past(frac):
                print(f"  dense/2:4 phase: deadline, stopping before {n}x{k}", flush=True)
                return
            tag = f"{model}/{layer}"
            self.group()
            w32 = kg.randn((n, k), torch.float32, seed_of("W", n, k))
            for dt in ("fp16", "bf16"):
                w = w32.to(kg.DTYPES[dt])
                w24 = w * kg.mask_2to4(w)
                for m in ms:
                    x = kg.randn((m, k), kg.DTYPES[dt], seed_of("x", m, k, dt))
                    ref_d = self.reference(x, w, seed_of("rows", m, n))
                    base_d = self.base("gemm", m, n, k, "dense", 1.0, None, shape=tag)
                    row = self.measure(base_d, kg.prepare_cublas(x, w), ref_d)
                    if row.get("t_s") is not None:
                        self.cublas_done.add((m, n, k, dt))
                    del ref_d
                    ref_s = self.reference(x, w24, seed_of("rows", m, n))
                    base_s = self.base("gemm", m, n, k, "2:4", 0.5, None, shape=tag)
                    search = (dt in self.args.search_dtypes.split(",")
                              and row.get("t_s") is not None
                              and row["t_s"] < SEARCH_MAX_DENSE_S)
                    self._cusparselt_point(base_s, x, w24, ref_s, dt, search)
                    del x, ref_s
                del w, w24
            del w32
            torch.cuda.empty_cache()
            print(f"  [{self.elapsed():6.1f}s] dense+2:4 {tag} {n}x{k} done "
                  f"({len(self.w.rows)} rows)", flush=True)

    def phase_attention(self, geoms, frac):
        """Fused attention (torch SDPA, one backend at a time) over ATTN_GEOMS, fp16 and bf16."""
        kg = self.kg
        for i, (b, h, hkv, lq, lkv, d, causal) in enumerate(geoms):
            if self.past(frac):
                print(f"  attention phase: deadline, stopping at geometry {i}", flush=True)
                return
            self.group()
            for dt in ("fp16", "bf16"):
                q, k, v = kg.attention_inputs(b, h, hkv, lq, lkv, d, kg.DTYPES[dt], seed_of("attn", b, h, hkv, lq, lkv, d))
                base = {"kind": "attention", "batch": b, "heads": h, "kv_heads": hkv, "q_len": lq, "kv_len": lkv,
                        "head_dim": d, "causal": causal, "m": lq, "n": d, "k": lkv, "pattern": "dense",
                        "density": 1.0, "block": None,
                        "flops": 4.0 * b * h * lq * lkv * d * (0.5 if causal and lq == lkv else 1.0)}
                for var in ATTN_VARIANTS:
                    self.measure_fused(base, kg.prepare_sdpa_tag(var), dt,
                                       functools.partial(kg.prepare_sdpa, q, k, v, causal, var),
                                       functools.partial(kg.attention_error, q=q, k=k, v=v, causal=causal),
                                       "batch 0, first and last head, <= 64 query rows vs fp32")
                del q, k, v
            torch.cuda.empty_cache()
        print(f"  [{self.elapsed():6.1f}s] attention: {len(geoms)} geometries done ({len(self.w.rows)} rows)",
              flush=True)

    def phase_moe(self, layers, frac):
        """Grouped GEMM (torch._grouped_mm) over MoE expert layers, bf16, with its dense reference."""
        kg = self.kg
        for model, layer, e, n, k in layers:
            if self.past(frac):
                print(f"  moe phase: deadline, stopping before {model}/{layer}", flush=True)
                return
            self.group()
            w = kg.randn((e, n, k), torch.bfloat16, seed_of("Wmoe", e, n, k))
            for total in MOE_TOKENS:
                x = kg.randn((total, k), torch.bfloat16, seed_of("xmoe", total, k))
                for skew in MOE_SKEWS:
                    counts = kg.expert_token_counts(total, e, skew, seed_of("route", total, e, skew))
                    base = {"kind": "grouped", "m": total, "n": n, "k": k, "experts": e, "expert_tokens": counts,
                            "skew": skew, "pattern": "dense", "density": 1.0, "block": None,
                            "shape": f"{model}/{layer}"}
                    self.measure_fused(base, kg.prepare_grouped_mm, "bf16",
                                       functools.partial(kg.prepare_grouped_mm, x, w, counts),
                                       functools.partial(kg.grouped_error, x=x, w=w, counts=counts),
                                       "<= 32 tokens of every expert vs fp32")
                del x
            del w
            torch.cuda.empty_cache()
            print(f"  [{self.elapsed():6.1f}s] moe {model}/{layer} done ({len(self.w.rows)} rows)", flush=True)

    def _cusparselt_point(self, base, x, w24, ref, dt, search: bool):
        kg = self.kg
        for prep_fn in (kg.prepare_cusparselt_linear, kg.prepare_cslt_sparse_mm):
            try:
                prep = prep_fn(x, w24)
            except Exception as exc:  # noqa: BLE001
                self.error_row(base, prep_fn, exc, dt)
                continue
            self.measure(base, prep, ref)
            if prep_fn is kg.prepare_cslt_sparse_mm and "cudagraph" not in self.disabled:
                try:
                    gprep = kg.prepare_cuda_graph(prep)
                except Exception as exc:  # noqa: BLE001
                    self.error_row(base, prep, exc)
                    self.disabled["cudagraph"] = str(exc)
                    torch.cuda.synchronize()
                    continue
                self.measure(base, gprep, ref)
                del gprep
            del prep
        if search and "searched" not in self.disabled:
            # device time of the call with cuSPARSELt's own algorithm choice (graph replay)
            try:
                sprep = kg.prepare_cuda_graph(kg.prepare_cslt_sparse_mm_searched(x, w24))
            except Exception as exc:  # noqa: BLE001
                self.error_row(base, kg.prepare_cslt_sparse_mm_searched, exc, dt)
                self.disabled["searched"] = str(exc)
                torch.cuda.synchronize()
                return
            self.measure(base, sprep, ref)
            del sprep

    def phase_act_gemv(self, shapes, densities, frac):
        """Activation-sparse GEMV (M = 1, fp16): three implementations per density."""
        kg = self.kg
        for model, layer, n, k, _ms in shapes:
            if not model.startswith(("opt", "llama")):
                continue
            if self.past(frac):
                print("  act_gemv phase: deadline", flush=True)
                return
            tag = f"{model}/{layer}"
            self.group()
            w = kg.randn((n, k), torch.float16, seed_of("W", n, k))
            x_dense = kg.randn((1, k), torch.float16, seed_of("x", 1, k, "fp16"))
            self.ensure_cublas(x_dense, w, 1, n, k, tag)
            for d in densities:
                xs, idx = kg.sparse_activation(k, d, torch.float16, seed_of("act", k, d))
                ref = self.reference(xs.reshape(1, k), w, 0)
                base = self.base("gemv", 1, n, k, "activation", d, None, shape=tag,
                                 act_density_actual=idx.numel() / k)
                for prep_fn in (kg.prepare_act_gemv_torch, kg.prepare_act_gemv_torch_t,
                                kg.prepare_act_gemv_cupy):
                    try:
                        prep = (prep_fn(w, xs, idx, n_sm=self.n_sm)
                                if prep_fn is kg.prepare_act_gemv_cupy else prep_fn(w, xs, idx))
                    except Exception as exc:  # noqa: BLE001
                        self.error_row(base, prep_fn, exc, "fp16")
                        continue
                    self.measure(base, prep, ref)
                    del prep
            del w
            torch.cuda.empty_cache()
        print(f"  [{self.elapsed():6.1f}s] act_gemv done ({len(self.w.rows)} rows)", flush=True)

    def _sparse_series(self, name, shapes, densities, blocks, dtype_order, prep_fns, frac,
                       m_filter=None, mask_kind="unstructured"):
        """Shared loop for CSR / BSR / CuPy: per (shape, block, density) a series over M
        ascending, with the per-launch cap and the predicted-time skip."""
        kg = self.kg
        cap = self.args.cap_ms * 1e-3
        for model, layer, n, k, ms in shapes:
            tag = f"{model}/{layer}"
            ms_here = [m for m in sorted(ms) if m_filter is None or m_filter(m)]
            if not ms_here:
                continue
            if self.past(frac):
                print(f"  {name} phase: deadline, stopping before {n}x{k}", flush=True)
                return
            self.group()
            w32 = kg.randn((n, k), torch.float32, seed_of("W", n, k))
            for block in blocks:
                if block and (n % block or k % block):
                    continue
                for d in densities:
                    if self.past(frac):
                        break
                    if mask_kind == "block":
                        mask = kg.mask_block((n, k), d, block, seed_of("blk", n, k, d, block))
                        pattern = "block"
                    else:
                        mask = kg.mask_unstructured((n, k), d, seed_of("uns", n, k, d))
                        pattern = "unstructured"
                    d_actual = float(mask.float().mean())
                    for prep_fn in prep_fns:
                        self._series_over_m(name, prep_fn, w32, mask, n, k, ms_here, d,
                                            d_actual, block, pattern, dtype_order, cap, tag)
                    del mask
            del w32
            torch.cuda.empty_cache()
            print(f"  [{self.elapsed():6.1f}s] {name} {tag} {n}x{k} done "
                  f"({len(self.w.rows)} rows)", flush=True)

    def _series_over_m(self, name, prep_fn, w32, mask, n, k, ms, d, d_actual, block,
                       pattern, dtype_order, cap, tag):
        kg = self.kg
        for dt in dtype_order:
            key = f"{prep_fn.variant}:{dt}"
            if key in self.disabled:
                continue
            wm = (w32 * mask).to(kg.DTYPES[dt])
            last = None  # (m, t_s) of the last measured point
            failed = False
            for m in ms:
                base = self.base("gemm", m, n, k, pattern, d, block, shape=tag,
                                 density_actual=d_actual)
                if last is not None and last[1] * m / last[0] > cap:
                    self.skip_row(base, prep_fn, dt, f"predicted {last[1] * m / last[0]:.3g} s "
                                  f"per launch from m={last[0]} > cap {cap:.3g} s")
                    continue
                x = kg.randn((m, k), kg.DTYPES[dt], seed_of("x", m, k, dt))
                ref = self.reference(x, wm, seed_of("rows", m, n))
                try:
                    prep = (prep_fn(x, wm, block) if block else prep_fn(x, wm))
                except Exception as exc:  # noqa: BLE001
                    self.error_row(base, prep_fn, exc, dt)
                    failed = True
                    del x, ref
                    break
                row = self.measure(base, prep, ref, cap_s=cap)
                del prep
                if row.get("error"):
                    failed = True
                    del x, ref
                    break
                if row.get("t_s") is not None:
                    last = (m, row["t_s"])
                    if (m, n, k, dt) not in self.cublas_done:
                        self.ensure_cublas(x, w32.to(kg.DTYPES[dt]), m, n, k, tag)
                elif row.get("skipped"):
                    last = (m, row.get("t_probe_s", cap))
                del x, ref
            del wm
            if failed:
                # an API failure for this dtype: remember it and try the next dtype
                self.disabled[key] = "failed"
                continue
            break  # the first dtype that works is the one this kernel is measured in

    # -- summary ---------------------------------------------------------------------------

    def summary(self):
        print("\nrows per (kernel, variant, dtype, status):", flush=True)
        for key, cnt in sorted(self.w.counts.items(), key=lambda kv: tuple(map(str, kv[0]))):
            print(f"  {str(key[0]):<14} {str(key[1]):<34} {str(key[2]):<5} {key[3]:<5} {cnt}")
        dense = {}
        for r in self.w.rows:
            if r["kernel"] == "cublas" and r["t_s"]:
                dense[(r["m"], r["n"], r["k"], r["dtype"])] = r["t_s"]
        ratios = defaultdict(list)
        for r in self.w.rows:
            if r["kind"] in ("gemm", "gemv") and r["kernel"] != "cublas" and r["t_s"]:
                d = dense.get((r["m"], r["n"], r["k"], r["dtype"]))
                if d:
                    mb = "M<=16" if r["m"] <= 16 else "M<=512" if r["m"] <= 512 else "M>512"
                    ratios[(r["kernel"], r["variant"], r["dtype"], r["pattern"], r["density"],
                            r["block"], mb)].append(d / r["t_s"])
        print("\nmedian speed-up over cuBLAS (dense t / sparse t), by M band:")
        for key in sorted(ratios, key=lambda t: tuple(map(str, t))):
            v = ratios[key]
            print(f"  {' '.join(str(x) for x in key):<90} n={len(v):3d} "
                  f"median {statistics.median(v):6.3f} min {min(v):6.3f} max {max(v):6.3f}")
        for r in self.w.rows:
            if r["kind"] == "ceiling" and r.get("unit") != "s":
                print(f"  ceiling {r['kernel']}: {r['value']:.1f} {r['unit']}")
        n_bad = sum(1 for r in self.w.rows
                    if r["kind"] in ("gemm", "gemv") and r["t_s"] and not r["ok"])
        print(f"\n{len(self.w.rows)} rows, {n_bad} timed but not ok, "
              f"{self.elapsed():.0f} s elapsed; written to {self.args.out}", flush=True)


def run(args, kg) -> int:
    # library warnings would flood the log; the first call's warnings are kept per row
    warnings.filterwarnings("ignore", category=UserWarning)
    c = Campaign(args, kg)
    shapes = all_shapes(args.quick, args.shape_set)
    q = args.quick
    ph = set(args.phases.split(","))
    unknown = ph - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases {sorted(unknown)}; allowed: {','.join(PHASES)}")
    sparse_m = LLM_M_SPARSE | RESNET_M_SPARSE
    cupy_shapes = [s for s in shapes if (s[2], s[3]) in CUPY_SHAPES] if not q else shapes
    if args.shape_set != "main" and not q:
        cupy_shapes = shapes[::3]
    try:
        if "ceilings" in ph:
            c.ceilings()
            print(f"  [{c.elapsed():6.1f}s] ceilings done", flush=True)
        if "dense24" in ph:
            c.phase_dense_24(shapes, frac=0.45)
        if "act" in ph:
            c.phase_act_gemv(shapes, [0.5, 0.1] if q else ACT_DENSITIES, frac=0.50)
        if "csr" in ph:
            c._sparse_series("cusparse_csr", shapes, [0.1] if q else CSR_DENSITIES, [None],
                             ("fp16", "fp32"), [kg.prepare_torch_csr], frac=0.68,
                             m_filter=lambda m: m in sparse_m)
        if "bsr" in ph:
            c._sparse_series("torch_bsr", shapes, [0.1] if q else BSR_DENSITIES, BSR_BLOCKS,
                             ("fp16", "fp32"), [kg.prepare_torch_bsr], frac=0.88,
                             m_filter=lambda m: m in sparse_m, mask_kind="block")
        if "cupy" in ph:
            c._sparse_series("cupy_csr", cupy_shapes, [0.1] if q else CUPY_DENSITIES, [None],
                             ("fp16", "fp32"), [kg.prepare_cupy_csr], frac=0.94,
                             m_filter=lambda m: m in CUPY_M)
        if "moe" in ph:
            c.phase_moe(MOE_LAYERS[:1] if q else MOE_LAYERS, frac=0.99)
        if "attn" in ph:
            c.phase_attention(ATTN_GEOMS[:6] if q else ATTN_GEOMS, frac=0.99)
        if "bsr32" in ph:
            # fp32 BSR on a subset, against fp32 cuBLAS
            c._sparse_series("torch_bsr", cupy_shapes, [0.1] if q else [0.2, 0.05], BSR_BLOCKS,
                             ("fp32",), [kg.prepare_torch_bsr], frac=1.0,
                             m_filter=lambda m: m in CUPY_M, mask_kind="block")
    finally:
        c.clocks.collect()
        c.summary()
        c.w.close()
    return 0


def _load_kernels():
    try:
        from simsparse.kernels import gpu
    except ImportError:  # run as a script without the package importable
        import importlib.util
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "gpu.py")
        spec = importlib.util.spec_from_file_location("simsparse_kernels_gpu", path)
        gpu = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = gpu
        spec.loader.exec_module(gpu)
    return gpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m simsparse.measure_gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON-lines file to append rows to")
    p.add_argument("--quick", action="store_true", help="small smoke grid (about a minute)")
    p.add_argument("--campaign", default=None, help="campaign id (default: <gpu>-gemm-sparse-"
                   "<UTC date>)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="soft wall-clock budget; phases stop at fixed fractions of it")
    p.add_argument("--cap-ms", type=float, default=25.0,
                   help="skip a sparse point whose single launch exceeds this")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--timed", type=int, default=20)
    p.add_argument("--phases", default=",".join(PHASES),
                   help="comma-separated subset of: " + ",".join(PHASES))
    p.add_argument("--search-dtypes", default="fp16,bf16",
                   help="dtypes for which cuSPARSELt's algorithm search variant is measured")
    p.add_argument("--profile-kernels", action="store_true",
                   help="record the kernels each cuBLAS / cuSPARSELt call launches (names, grid, "
                        "block; torch.profiler) with its row")
    p.add_argument("--verbose", action="store_true", help="print every row")
    p.add_argument("--shape-set", choices=sorted(SHAPE_SETS), default="main",
                   help="main: the first campaign's shapes; new: other model families, never seen by a "
                        "model calibrated on main")
    args = p.parse_args(argv)
    if args.warmup < 5 or args.timed < 20:
        p.error("MEASURING.md: at least 5 warm-up and 20 timed launches")
    if torch is None or not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to measure", file=sys.stderr)
        return 2
    if args.quick:
        args.budget_s = min(args.budget_s, 120.0)
    return run(args, _load_kernels())


if __name__ == "__main__":
    sys.exit(main())
