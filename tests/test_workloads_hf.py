"""Config-built transformers, CNN layer tables, recipes, training traces, serialisation.

No torch needed. Expected numbers are computed here by hand from the public config values
or taken from the papers / model cards, never from the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import workloads
from simsparse.core.ops import Trace
from simsparse.core.sparsity import NM, Activation, Dense, Unstructured
from workloads import cnn
from workloads.hf import config_names, expert_routing, load_config
from workloads.training import by_phase, training_trace

ROOT = Path(__file__).resolve().parents[1]


def weight_ops(trace):
    return [op for op in trace if op.kind in ("gemm", "conv2d") and op.weight_is_param]


def gemm_attn_flops(trace):
    return sum(op.flops for op in trace if op.kind in ("gemm", "conv2d", "attention"))



# --- built-in configs -------------------------------------------------------------------------
EXPECTED_CONFIGS = {"opt-125m", "opt-1.3b", "opt-6.7b", "opt-13b", "opt-30b", "opt-66b", "opt-175b",
                    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "mixtral-8x7b",
                    "bert-base", "bert-large", "vit-b-16"}


def test_every_builtin_config_has_a_source_and_builds():
    assert EXPECTED_CONFIGS <= set(config_names())
    for name in config_names():
        _, c = load_config(name)
        assert c.get("_source"), name
        t = workloads.hf(name, batch=1, seq_len=8)
        assert len(t) > 10 and t.provenance["config_source"] == c["_source"]


def test_names_include_transformers_and_cnns():
    assert {"mobilenet_v1", "mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50"} <= set(workloads.names())
    assert EXPECTED_CONFIGS <= set(workloads.names())


def test_llama2_70b_decode_flops_match_the_hand_formula():
    # public config: d=8192, 64 heads of 128, 8 KV heads (GQA), ffn 28672, 80 layers, vocab 32000
    d, heads, kv_heads, hd, ffn, layers, vocab = 8192, 64, 8, 128, 28672, 80, 32000
    b, kv = 16, 4096
    per_layer = d * d + 2 * d * (kv_heads * hd) + d * d + 3 * d * ffn  # q, k+v, o, gate+up+down
    linear_params = layers * per_layer + vocab * d  # + lm_head
    # with the embedding table and the (2 per layer + final) RMSNorm weights this is the model
    # card's parameter count of Llama-2-70B
    assert linear_params + vocab * d + (2 * layers + 1) * d == 68_976_648_192
    tokens = b * 1  # decode: one new token per sequence
    attn = layers * 4 * b * heads * 1 * kv * hd
    t = workloads.hf("llama-2-70b", batch=16, phase="decode", kv_len=4096)
    assert sum(op.n * op.k for op in weight_ops(t)) == linear_params
    assert gemm_attn_flops(t) == 2 * linear_params * tokens + attn
    att = [op for op in t if op.kind == "attention"]
    assert len(att) == 80 and all(op.attn.n_kv_heads == 8 and op.attn.kv_len == 4096 for op in att)
    kproj = next(op for op in t if op.name == "layers.0.k_proj")
    assert (kproj.m, kproj.n, kproj.k) == (16, 1024, 8192)


def test_llama2_7b_parameter_count_matches_the_model_card():
    t = workloads.hf("llama-2-7b", batch=1, seq_len=4)
    d, layers, vocab = 4096, 32, 32000
    assert sum(op.n * op.k for op in weight_ops(t)) + vocab * d + (2 * layers + 1) * d == 6_738_415_616


def test_prefill_attention_is_causal_and_flops_scale_with_tokens():
    b, s = 2, 256
    t = workloads.hf("llama-3-8b", batch=b, seq_len=s)
    d, ffn, layers, vocab, kvh = 4096, 14336, 32, 128256, 8
    params = layers * (2 * d * d + 2 * d * kvh * 128 + 3 * d * ffn) + vocab * d
    attn = layers * 4 * b * 32 * s * s * 128
    assert gemm_attn_flops(t) == 2 * params * b * s + attn
    a = next(op for op in t if op.kind == "attention")
    assert a.attn.causal and a.attn.score_fraction == pytest.approx((s + 1) / (2 * s))


# runs benchmarks/extract_llama70b.py's main() and prints its result as the last line
BENCH_LLAMA70B = ("import sys; sys.path.insert(0, 'benchmarks'); import extract_llama70b as b; "
                  "import json; print(json.dumps(b.main()))")


def test_benchmark_llama70b_extraction_is_fast_and_small():
    out = subprocess.run([sys.executable, "-c", BENCH_LLAMA70B], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["extract_s"] < 5.0
    assert res["peak_rss_mb"] < 1024
    assert res["torch_imported"] == 0.0  # config extraction never needs torch


def test_benchmark_peak_rss_is_its_own_not_its_parents():
    # a benchmark run from a large parent (an xdist worker late in a run) must report its own peak: the
    # parent here holds 400 MB, the extraction needs ~30 MB
    code = ("import subprocess, sys\n"
            "big = bytearray(400 * 2**20)\n"
            "big[::4096] = b'x' * len(big[::4096])\n"
            f"out = subprocess.run([sys.executable, '-c', {BENCH_LLAMA70B!r}], capture_output=True, text=True,"
            " check=True)\n"
            "print(out.stdout.strip().splitlines()[-1])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["peak_rss_mb"] < 200


def test_configs_and_cnn_tables_simulate_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import workloads, simsparse\n"
            "t = workloads.get('mobilenet_v1', batch=2, sparsity='pointwise unstructured@0.1')\n"
            "r = simsparse.simulate(t, 'h100-sxm')\n"
            "assert r.total_s > 0 and len(r.to_frame()) == len(t)\n"
            "simsparse.simulate(workloads.get('llama-2-7b', batch=1, phase='decode', kv_len=64), 'h100-sxm')\n"
            "try:\n    workloads.from_module(object(), None)\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch installed" in out.stdout  # a clear message, not an ImportError


def test_mixtral_moe_uses_routed_token_counts():
    b, s = 2, 16
    tokens, top_k, experts, d, ffn, layers = b * s, 2, 8, 4096, 14336, 32
    t = workloads.hf("mixtral-8x7b", batch=b, seq_len=s)  # balanced routing: 64 / 8 = 8 each
    w1 = [op for op in t if op.name.startswith("layers.0.") and op.name.endswith(".w1")]
    assert [op.m for op in w1] == [8] * 8
    assert all(op.meta["experts"] == 8 and op.meta["top_k"] == 2 for op in w1)
    gate = next(op for op in t if op.name == "layers.0.block_sparse_moe.gate")
    assert gate.meta["tokens_per_expert"] == [8] * 8 and (gate.m, gate.n, gate.k) == (tokens, 8, d)
    # expert FLOPs do not depend on the routing: 2 · tokens · top_k · 3 · d · ffn per layer
    for routing in ("balanced", "random", [64, 0, 0, 0, 0, 0, 0, 0]):
        tr = workloads.hf("mixtral-8x7b", batch=b, seq_len=s, routing=routing)
        exp = sum(op.flops for op in tr if "expert" in op.meta)
        assert exp == layers * 2 * tokens * top_k * 3 * d * ffn
    # all 8 experts present: the parameter count is the model card's 46.7 B
    params = sum(op.n * op.k for op in weight_ops(t)) + 32000 * d + (2 * layers + 1) * d
    assert params == 46_702_792_704
    del experts


def test_expert_routing_variants():
    assert expert_routing(10, 4, 2, "balanced", 0, 0) == [5, 5, 5, 5]
    r = expert_routing(100, 8, 2, "random", 3, 0)
    assert sum(r) == 200 and r == expert_routing(100, 8, 2, "random", 3, 0)
    assert expert_routing(3, 2, 1, [[3, 0], [1, 2]], 1, 0) == [1, 2]
    with pytest.raises(ValueError, match="summing"):
        expert_routing(3, 2, 1, [1, 1], 0, 0)


def test_bert_and_vit_shapes_and_parameters():
    t = workloads.hf("bert-base", batch=2, seq_len=128)
    d, ffn = 768, 3072
    assert sum(op.n * op.k for op in weight_ops(t)) == 12 * (4 * d * d + 2 * d * ffn) + d * d  # + pooler
    att = [op for op in t if op.kind == "attention"]
    assert len(att) == 12 and not att[0].attn.causal and att[0].attn.q_len == 128
    with pytest.raises(ValueError, match="encoder"):
        workloads.hf("bert-base", phase="decode")
    v = workloads.hf("vit-b-16", batch=1)
    patch = next(op for op in v if op.kind == "conv2d")
    assert (patch.conv.kh, patch.conv.stride, patch.m, patch.n, patch.k) == (16, 16, 196, 768, 3 * 16 * 16)
    assert next(op for op in v if op.kind == "attention").attn.q_len == 197  # 14·14 patches + [CLS]
    weights = sum(op.n * op.k * op.batch for op in weight_ops(v))
    # model card count 86,567,656 = weights + biases + LayerNorms + position / [CLS] embeddings
    biases_norms = 768 + 12 * (4 * 768 + 3072 + 768 + 4 * 768) + 2 * 768 + 1000 + 197 * 768 + 768
    assert weights + biases_norms == 86_567_656
    macs = sum(op.flops for op in weight_ops(v) + [op for op in v if op.kind == "attention"]) / 2
    assert macs == pytest.approx(17.56e9, rel=0.01)  # ViT-B/16 at 224²: 17.6 GMACs (timm / paper)


def test_opt_family_uses_relu_mlp_and_out_proj():
    t = workloads.hf("opt-1.3b", batch=1, seq_len=32)
    names = {op.name for op in t}
    assert {"layers.0.fc1", "layers.0.fc2", "layers.0.out_proj", "embed_positions"} <= names
    fc1 = next(op for op in t if op.name == "layers.0.fc1")
    assert (fc1.n, fc1.k) == (8192, 2048)
    big = workloads.hf("opt-175b", batch=1, seq_len=1)
    layers, d = 96, 12288
    assert sum(op.n * op.k for op in weight_ops(big)) == layers * 12 * d * d + 50272 * d


def test_config_dict_and_object_are_accepted():
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 100}

    class FakeConfig:  # anything with to_dict(), like a transformers.PretrainedConfig
        def to_dict(self):
            return dict(cfg, _name_or_path="tiny")

    a, b = workloads.hf(cfg, seq_len=4), workloads.hf(FakeConfig(), seq_len=4)
    assert [op.flops for op in a] == [op.flops for op in b] and b.provenance["model"] == "tiny"


def test_transformers_config_object_if_installed():
    transformers = pytest.importorskip("transformers")
    c = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                 num_key_value_heads=2, num_hidden_layers=2, vocab_size=100)
    t = workloads.hf(c, batch=1, seq_len=4)
    assert next(op for op in t if op.name == "layers.0.k_proj").n == 2 * 16


# --- CNN tables (no torch) ---------------------------------------------------------------------
@pytest.mark.parametrize("name,gmacs", [
    ("mobilenet_v1", 0.569),     # Howard et al. 2017, Table 1: 569 M mult-adds
    ("mobilenet_v2", 0.30),      # Sandler et al. 2018 / torchvision: 300 M
    ("efficientnet_b0", 0.39),   # Tan & Le 2019: 0.39 B FLOPs (mult-adds)
    ("resnet18", 1.81),          # torchvision: 1.81 GFLOPS (mult-adds)
    ("resnet50", 4.09),          # torchvision: 4.09 GFLOPS (mult-adds)
])
def test_cnn_table_macs_match_published(name, gmacs):
    t = workloads.get(name, batch=1)
    macs = sum(op.flops for op in weight_ops(t)) / 2
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.012)


def test_cnn_tables_geometry_by_hand():
    t = cnn.trace("mobilenet_v1", batch=2)
    first = t.ops[0]
    assert first.conv.stride == 2 and first.conv.h_out == 112 and (first.m, first.n, first.k) == (2 * 112 * 112, 32, 27)
    dw = next(op for op in t if op.name == "features.1.dw.conv")
    assert dw.conv.is_depthwise and (dw.m, dw.n, dw.k, dw.batch) == (2 * 112 * 112, 1, 9, 32)
    fc = t.ops[-1]
    assert fc.name == "fc" and (fc.m, fc.n, fc.k) == (2, 1000, 1024)
    r = cnn.trace("resnet50", image_size=224)
    ds = next(op for op in r if op.name == "layer2.0.downsample.conv")
    assert ds.conv.stride == 2 and (ds.n, ds.k) == (512, 256)
    # the CLI passes transformer options to every workload; CNNs ignore them
    assert len(workloads.get("resnet18", batch=2, seq_len=1, phase="decode", kv_len=2048)) == len(cnn.trace("resnet18"))


# --- recipes ---------------------------------------------------------------------------------
def test_recipe_weights_and_activations():
    t = workloads.get("llama-2-7b", batch=1, seq_len=16, sparsity="all linears 2:4; 50% teal on mlp inputs")
    for op in t:
        if op.name == "lm_head":
            assert op.weight == Dense()
        elif op.kind == "gemm":
            assert op.weight == NM(2, 4)
            mlp = op.meta["role"] in ("mlp_in", "mlp_out")
            assert op.activation == (Activation(0.5, "threshold") if mlp else Dense())
    assert t.provenance["recipe"]["rules"][1]["activation"] == {"pattern": "activation", "density": 0.5,
                                                                 "source": "threshold"}


def test_recipe_skips_ops_that_cannot_hold_the_pattern_and_globs():
    r = workloads.get("resnet50", sparsity="convs 2:4")
    conv1 = r.ops[0]
    assert conv1.weight == Dense() and r.provenance["skipped"] == ["conv1.conv"]  # K = 3·7·7 = 147
    assert all(op.weight == NM(2, 4) for op in r if op.kind == "conv2d" and op.name != "conv1.conv")
    t = workloads.apply_sparsity(workloads.hf("opt-125m", seq_len=8), "layers.*.fc2 unstructured@0.3; "
                                 "topk@0.25 on qkv")
    fc2 = [op for op in t if op.name.endswith("fc2")]
    assert len(fc2) == 12 and all(op.weight.density == 0.3 for op in fc2)
    q = next(op for op in t if op.name == "layers.3.q_proj")
    assert q.activation == Activation(0.25, "topk") and q.weight == Dense()
    with pytest.raises(ValueError, match="selector"):
        workloads.apply_sparsity(r, "attention 2:4")  # a CNN has no attention


def test_dejavu_recipe_marks_the_mlp_output_rows_skipped():
    t = workloads.apply_sparsity(workloads.hf("opt-125m", seq_len=8), "90% dejavu on mlp_out")
    fc2 = next(op for op in t if op.name == "layers.0.fc2")
    fc1 = next(op for op in t if op.name == "layers.0.fc1")
    assert fc2.activation.source == "predictor" and fc2.activation.density == pytest.approx(0.1)
    assert fc1.meta["output_density"] == pytest.approx(0.1)


# --- training traces ----------------------------------------------------------------------------
def test_training_trace_flops_and_phases():
    fwd = workloads.hf("llama-2-7b", batch=1, seq_len=64)
    tr = training_trace(fwd)
    ph = by_phase(tr)
    lin = sum(op.flops for op in weight_ops(fwd))
    att = sum(op.flops for op in fwd if op.kind == "attention")
    # each weight GEMM: dX = dY·W and dW = dYᵀ·X cost what the forward GEMM costs
    bwd_gemm = sum(op.flops for op in tr if op.phase != "fwd" and op.kind in ("gemm", "attention"))
    assert bwd_gemm == 2 * lin + 2.5 * att  # FlashAttention backward: 5 GEMMs vs 2 forward
    assert ph["bwd_weight"] == pytest.approx(lin + sum(op.flops for op in tr if op.name.endswith(".bwd")
                                                       and op.phase == "bwd_weight"))
    assert workloads.hf("llama-2-7b", batch=1, seq_len=64, phase="train").flops == tr.flops


def test_training_nm_weight_is_unstructured_in_bwd_data_unless_transposable():
    fwd = workloads.hf("llama-2-7b", batch=1, seq_len=16)
    plain = training_trace(workloads.apply_sparsity(fwd, "all linears 2:4"))
    tpose = training_trace(workloads.apply_sparsity(fwd, "all linears 2:4t"))
    name = "layers.0.up_proj"
    f = next(op for op in plain if op.name == name)
    bd = next(op for op in plain if op.name == name + ".bwd_data")
    bw = next(op for op in plain if op.name == name + ".bwd_weight")
    assert (bd.m, bd.n, bd.k) == (f.m, f.k, f.n)  # dX[M,K] = dY[M,N]·W[N,K]: reduction over N
    assert (bw.m, bw.n, bw.k) == (f.n, f.k, f.m)  # dW[N,K] = dYᵀ[N,M]·X[M,K]: reduction over M
    assert bd.weight == Unstructured(0.5)
    assert next(op for op in tpose if op.name == name + ".bwd_data").weight == NM(2, 4)
    assert not bw.weight_is_param and bw.meta["output_density"] == 1.0  # dense gradient
    masked = training_trace(workloads.apply_sparsity(fwd, "all linears 2:4"), masked_weight_grad=True)
    assert next(op for op in masked if op.name == name + ".bwd_weight").meta["output_density"] == 0.5


def test_training_cnn_first_conv_needs_no_input_gradient():
    tr = workloads.get("resnet18", phase="train")
    names = {op.name for op in tr}
    assert "conv1.conv.bwd_weight" in names and "conv1.conv.bwd_data" not in names
    assert "layer1.0.conv1.conv.bwd_data" in names
    ds = next(op for op in tr if op.name == "layer2.0.downsample.conv.bwd_data")
    assert ds.meta["lowered_from"] == "conv2d" and ds.meta["conv"]["stride"] == 2


# --- serialisation -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_config_trace_roundtrips_with_recipe_and_meta(tmp_path, suffix):
    t = workloads.get("mixtral-8x7b", batch=1, seq_len=8, sparsity="experts 2:4; 40% teal on attention")
    back = Trace.load(t.save(tmp_path / f"t{suffix}"))
    assert back.ops == t.ops and back.provenance == json.loads(json.dumps(t.provenance))
    assert [op.meta for op in back] == [json.loads(json.dumps(op.meta)) for op in t]


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_detected_stats_roundtrip(tmp_path, suffix):
    from dataclasses import replace

    from workloads import prune
    from workloads.detect import detect

    w = np.random.default_rng(0).standard_normal((64, 128))
    base = workloads.hf("llama-2-7b", batch=1, seq_len=4)
    nm = detect(prune.nm(w, 2, 4))
    un = detect(prune.magnitude(w, 0.2))
    ops = list(base.ops)
    ops[2] = replace(ops[2], n=64, k=128, weight=nm)
    ops[3] = replace(ops[3], n=64, k=128, weight=un)
    t = Trace("stats", tuple(ops), {})
    path = t.save(tmp_path / f"s{suffix}")
    back = Trace.load(path)
    for i, sp in ((2, nm), (3, un)):
        got = back.ops[i].weight
        assert got == sp
        assert np.array_equal(got.stats.row_nnz, sp.stats.row_nnz)
        assert np.array_equal(got.stats.tile_nnz, sp.stats.tile_nnz) and got.stats.tile_shape == (64, 64)


@pytest.mark.parametrize("name, convs, clamps, se_fcs", [
    ("mobilenet_v1", 27, 27, 0),  # first conv + 13 depthwise + 13 pointwise, each with BN and ReLU6
    ("mobilenet_v2", 52, 35, 0),  # first conv, block 0 (dw, project), 16 x (expand, dw, project), last 1x1;
                                  # ReLU6 after all but the 17 linear projections
    ("efficientnet_b0", 49, 0, 32),  # stem, block 1 (dw, project), 15 x (expand, dw, project), head;
                                     # SiLU is not folded; the 16 squeeze-excites' two FCs have no BN
])
def test_fold_for_deployment_drops_exactly_the_bn_and_relu_ops(name, convs, clamps, se_fcs):
    t = cnn.trace(name)
    folded = cnn.fold_for_deployment(t)
    kept = [o for o in t if not (o.kind == "eltwise" and o.meta.get("op_type") in cnn.FOLDED_AT_DEPLOYMENT)]
    assert list(folded) == kept  # everything else, in order
    bn = sum(o.kind == "eltwise" and o.meta.get("op_type") == "batch_norm" for o in t)
    clamp = sum(o.kind == "eltwise" and o.meta.get("op_type") in ("relu", "hardtanh") for o in t)
    assert (sum(o.kind == "conv2d" for o in t), bn, clamp) == (convs + se_fcs, convs, clamps)
    assert len(t) - len(folded) == bn + clamp
    assert all(o.meta.get("op_type") not in cnn.FOLDED_AT_DEPLOYMENT for o in folded)


@pytest.mark.parametrize("kw", [{"seq_len": 8192, "kv_len": 1024}, {"phase": "decode", "kv_len": 0}])
def test_kv_len_shorter_than_the_queries_is_refused(kw):
    with pytest.raises(ValueError, match="kv_len"):
        workloads.get("llama-2-7b", **kw)


# --- activation patterns go to the activation operand -------------------------------------------
OPT125M_LINEARS = {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}  # per layer, 12 layers


def test_activation_pattern_goes_to_the_activation_operand_of_every_linear():
    base = workloads.get("opt-125m", seq_len=8)
    t = workloads.apply_sparsity(base, "activation@0.4")
    hit = [op for op in t if op.activation == Activation(0.4)]
    assert len(hit) == 12 * len(OPT125M_LINEARS)
    assert {op.name.split(".")[-1] for op in hit} == OPT125M_LINEARS
    assert all(op.weight == Dense() for op in t)  # nothing lands in a weight slot
    assert next(op for op in t if op.name == "lm_head").activation == Dense()  # the head is not a linear
    assert "act-synthetic(0.4)" in t.name and t.provenance["activation_sparsity"]["density"] == 0.4
    # the same as the recipe spelling of it, and as the recipe's '<selector> <pattern>' form
    assert t.ops == workloads.apply_sparsity(base, "60% activation on all").ops
    mlp = workloads.apply_sparsity(base, "mlp activation@0.4")
    assert next(op for op in mlp if op.name == "layers.0.fc1").activation == Activation(0.4)
    assert next(op for op in mlp if op.name == "layers.0.q_proj").activation == Dense()
    with pytest.raises(ValueError, match="activation: got 'activation@0.5'"):
        workloads.apply_sparsity(base, "activation@0.4", "activation@0.5")  # two activation patterns


# --- attention backward ------------------------------------------------------------------------
def attn_backward(trace, fwd_name):
    return [op for op in trace if op.phase != "fwd" and op.meta.get("fwd_op") == fwd_name]


def test_attention_backward_is_five_forward_sized_gemms():
    # opt-125m, batch 1, seq 128: 12 heads of head_dim 64, causal. Forward S = Q·Kᵀ and O = P·V:
    # 2 GEMMs of 2·128·128·64 FLOPs per head; FlashAttention-2's backward (Dao 2023, §3.1.2)
    # recomputes S and forms dP, dQ, dK, dV: 5 such GEMMs, 10·12·128·128·64 FLOPs
    t = workloads.get("opt-125m", seq_len=128, phase="train")
    bwd = attn_backward(t, "layers.0.attn")
    assert sum(op.flops for op in bwd) == 10 * 12 * 128 * 128 * 64 == 125_829_120
    # causal: query i (1-based) sees i of the 128 keys, so sum(i) / 128² = 129/256 of each score
    # matrix is computed, in the backward as in the forward
    assert sum(op.useful_flops for op in bwd) == pytest.approx(125_829_120 * 129 / 256)
    assert all(op.kind == "attention" for op in bwd)  # priced from their geometry, masking included
    # not causal (BERT, 197 ViT tokens): the same 2.5x of the forward
    v = workloads.get("vit-b-16", phase="train")
    fwd = next(op for op in v if op.kind == "attention")
    assert sum(op.useful_flops for op in attn_backward(v, fwd.name)) == 2.5 * 4 * 12 * 197 * 197 * 64


def test_attention_backward_is_priced_as_two_and_a_half_forwards():
    import simsparse

    # executed FLOPs of the priced kernels (tiles the causal mask leaves), on a GPU
    t = workloads.get("llama-2-7b", batch=2, seq_len=1024, phase="train")
    ops = [op for op in t if op.name == "layers.0.attn"] + attn_backward(t, "layers.0.attn")
    res = simsparse.simulate(Trace("attn", tuple(ops)), "h100-sxm")
    executed = [r.cost.flops for r in res.results]
    assert sum(executed[1:]) == pytest.approx(2.5 * executed[0], rel=1e-9)


def test_attention_backward_odd_head_pairs_keeps_the_flops():
    # 1 sequence x 3 heads (odd (batch, kv head) pairs cannot be split in halves): batched GEMMs
    cfg = {"model_type": "llama", "hidden_size": 96, "num_attention_heads": 3, "num_hidden_layers": 1,
           "intermediate_size": 128, "vocab_size": 100}
    t = workloads.hf(cfg, seq_len=16, phase="train")
    assert sum(op.flops for op in attn_backward(t, "layers.0.attn")) == 10 * 3 * 16 * 16 * 32


# --- sparsity on a training trace: before or after the backward is derived -----------------------
@pytest.mark.parametrize("sparsity", ["2:4", "unstructured@0.3", "all linears 2:4t; 50% teal on mlp"])
def test_train_sparsity_is_the_same_before_or_after_the_backward(sparsity):
    before = workloads.get("opt-125m", seq_len=16, phase="train", sparsity=sparsity)
    after = workloads.apply_sparsity(workloads.get("opt-125m", seq_len=16, phase="train"), sparsity)
    assert after == before  # name and ops
    assert [op.meta for op in after] == [op.meta for op in before]


def test_train_sparsity_after_the_backward_reaches_the_backward_ops():
    t = workloads.apply_sparsity(workloads.get("opt-125m", seq_len=16, phase="train"), "2:4")
    # dX = dY·W: the reduction runs along W's N axis, where 2:4 groups along K leave no 2:4
    # structure, only the density 1/2
    assert next(op for op in t if op.name == "layers.0.fc1.bwd_data").weight == Unstructured(0.5)
    masked = workloads.apply_sparsity(training_trace(workloads.get("opt-125m", seq_len=16),
                                                     masked_weight_grad=True), "2:4")
    assert next(op for op in masked if op.name == "layers.0.fc1.bwd_weight").meta["output_density"] == 0.5


# --- workloads.get: configs, options -------------------------------------------------------------
def test_get_takes_a_config_dict_or_a_config_json_path(tmp_path):
    ref = workloads.get("llama-2-7b", seq_len=8)
    cfg = json.loads((ROOT / "workloads" / "configs" / "llama-2-7b.json").read_text())
    assert workloads.get(cfg, seq_len=8).ops == ref.ops
    path = tmp_path / "llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    assert workloads.get(str(path), seq_len=8).ops == ref.ops
    assert workloads.get(path, seq_len=8, sparsity="2:4").ops == workloads.get("llama-2-7b", seq_len=8,
                                                                                 sparsity="2:4").ops
    assert load_config(str(path))[1] == cfg
    with pytest.raises(ValueError, match=r"model: got '.*missing\.json'; allowed: an existing HF config\.json"):
        workloads.get(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model: got '.*bad\.json'; allowed: a valid JSON HF config"):
        workloads.get(str(tmp_path / "bad.json"))


def test_get_refuses_an_unknown_option_naming_it():
    with pytest.raises(ValueError, match=r"option: got \['foo'\]; allowed: batch, seq_len, .*include_lm_head"):
        workloads.get("opt-125m", foo=1)
    with pytest.raises(ValueError, match=r"option: got \['foo'\]; allowed: batch, image_size"):
        workloads.get("resnet18", foo=1)
    with pytest.raises(ValueError, match="workload: got 'int'"):
        workloads.get(3)


# --- a pattern no op can hold --------------------------------------------------------------------
@pytest.mark.parametrize("pattern,why", [("2:3", "multiple of m=3"), ("fanin99999", "at most the fan-in K=4096")])
def test_pattern_no_op_can_hold_is_refused(pattern, why):
    # llama-2-7b: every linear has K = 4096 or 11008, neither a multiple of 3 nor >= 99999
    t = workloads.get("llama-2-7b", seq_len=8)
    with pytest.raises(ValueError, match=rf"sparsity: got '{pattern}'.*224 weight ops.*{why}"):
        workloads.apply_sparsity(t, pattern)
    with pytest.raises(ValueError, match=rf"recipe\.pattern: got '{pattern}'.*{why}"):
        workloads.apply_sparsity(t, f"all linears {pattern}")


def test_pattern_some_ops_cannot_hold_is_counted():
    # resnet50: 53 convs (stem, 16 bottlenecks x 3, 4 downsamples); the stem's K = 3·7·7 = 147 is
    # not a multiple of 4, every other K is (channels >= 64)
    for t in (workloads.get("resnet50", sparsity="2:4"), workloads.get("resnet50", sparsity="convs 2:4")):
        assert t.provenance["sparsity_ops"] == {"applied": 52, "skipped": 1}
        assert t.provenance["skipped"] == ["conv1.conv"]
