"""Extraction from torch modules, pruning masks, activation capture, MoE routing, training, CLI.

Needs torch (the [torch] extra); skipped without it. Models are small and seeded; expected
shapes and densities are worked out by hand in each test.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import simsparse  # noqa: E402
import workloads  # noqa: E402
from simsparse.core.ops import Trace  # noqa: E402
from simsparse.core.sparsity import (  # noqa: E402
    NM,
    Block,
    Channel,
    Dense,
    Unstructured,
)
from workloads import activations, cnn, prune  # noqa: E402
from workloads.torch_extract import from_module  # noqa: E402


def by_name(trace):
    return {op.name: op for op in trace}



# --- op coverage --------------------------------------------------------------------------------
class Attn(nn.Module):
    def __init__(self, d=32, heads=4, kv_heads=2):
        super().__init__()
        self.h, self.kvh, self.hd = heads, kv_heads, d // heads
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * kv_heads * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k, v = self.kv(x).view(b, s, 2, self.kvh, self.hd).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        scores = torch.matmul(q, q.transpose(-1, -2))  # an activation × activation product
        del scores
        return self.o(y.transpose(1, 2).reshape(b, s, -1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.norm = nn.LayerNorm(32)
        self.attn = Attn()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Parameter(torch.randn(32, 10))

    def forward(self, ids):
        x = self.emb(ids)
        x = x + self.attn(self.norm(x))
        x = x + self.fc2(F.relu(self.fc1(x)))
        return x @ self.head  # matmul with a parameter: a weight GEMM


def test_transformer_ops_shapes_names_and_dtypes():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 8))
    t = from_module(Tiny().eval(), ids)
    ops = by_name(t)
    assert ops["emb"].kind == "eltwise" and ops["emb"].m == 2 * 8 * 32 and ops["emb"].meta["vocab"] == 50
    assert ops["norm"].meta["op_type"] == "layer_norm"
    q = ops["attn.q"]
    assert (q.kind, q.m, q.n, q.k, q.dtype) == ("gemm", 16, 32, 32, "fp32")
    assert (ops["attn.kv"].n, ops["attn.kv"].k) == (2 * 2 * 8, 32)
    sdpa = ops["attn.sdpa"]
    assert sdpa.kind == "attention" and sdpa.attn.causal and sdpa.attn.heads == 4
    assert sdpa.attn.n_kv_heads == 2 and (sdpa.attn.q_len, sdpa.attn.kv_len, sdpa.attn.head_dim) == (8, 8, 8)
    mm = ops["attn.matmul"]
    assert not mm.weight_is_param and (mm.m, mm.n, mm.k, mm.batch) == (8, 8, 8, 2 * 4)
    head = ops["matmul"]  # x @ W with W [32, 10] a parameter: y = x·(Wᵀ)ᵀ, N = 10, K = 32
    assert head.weight_is_param and (head.m, head.n, head.k) == (16, 10, 32)
    assert ops["fc1"].meta["bias"] is True and ops["relu"].meta["op_type"] == "relu"
    assert [op.name for op in t].index("attn.q") < [op.name for op in t].index("fc1")  # graph order
    assert {"add", "add_1"} <= set(ops)  # the two residual adds of the top-level forward
    t16 = from_module(Tiny().eval(), ids, dtype="fp16")
    assert by_name(t16)["fc1"].dtype == "fp16" and by_name(t16)["fc1"].meta["torch_dtype"] == "float32"


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16, bias=False)
        self.grouped = nn.Conv2d(16, 32, 3, padding="same", groups=4, bias=False)
        self.asym = nn.Conv2d(32, 8, (1, 3), stride=(2, 1), padding=(0, 1), bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv1d = nn.Conv1d(8, 4, 3)

    def forward(self, x):
        x = self.bn(self.asym(self.grouped(self.dw(self.stem(x)))))
        return self.conv1d(x.flatten(2))


def test_conv_geometry_groups_depthwise_stride_padding():
    t = from_module(Convs().eval(), torch.randn(2, 3, 32, 32))
    ops = by_name(t)
    s = ops["stem"]
    assert s.conv.stride == 2 and s.conv.pad == 1 and s.conv.h_out == 16
    assert (s.m, s.n, s.k, s.batch) == (2 * 16 * 16, 16, 27, 1)
    dw = ops["dw"]  # dilation 2, padding 2 keeps 16x16; per group N = 1, K = 1·3·3
    assert dw.conv.is_depthwise and dw.conv.dilation == 2 and (dw.m, dw.n, dw.k, dw.batch) == (512, 1, 9, 16)
    assert dw.meta["depthwise"] is True
    g = ops["grouped"]  # 4 groups: N = 32/4, K = (16/4)·9
    assert g.conv.pad == 1 and (g.n, g.k, g.batch) == (8, 36, 4)
    a = ops["asym"]  # stride (2, 1) has no ConvGeom: im2col GEMM view, M = 2·8·16
    assert a.kind == "gemm" and (a.m, a.n, a.k) == (2 * 8 * 16, 8, 32 * 3) and a.meta["conv"]["nd"] == 2
    c1 = ops["conv1d"]  # length 128 → 126
    assert c1.kind == "gemm" and (c1.m, c1.n, c1.k) == (2 * 126, 4, 24)
    assert ops["bn"].meta["op_type"] == "batch_norm"
    assert s.flops == 2 * 512 * 16 * 27


def test_multihead_attention_module():
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    t = from_module(mha, (x, x, x))
    assert [op.name for op in t] == ["q_proj", "k_proj", "v_proj", "attention", "out_proj"]
    a = t.ops[3].attn
    assert (a.batch, a.heads, a.q_len, a.kv_len, a.head_dim) == (2, 4, 5, 5, 4)
    assert all((op.m, op.n, op.k) == (10, 16, 16) for op in t.ops if op.kind == "gemm")


# --- weight sparsity read from the weights -------------------------------------------------------
def test_prune_masks_zeros_and_conv_nm_along_im2col_k():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                      nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 32))
    prune.prune_model(m, "2:4", where=lambda n, mod: isinstance(mod, nn.Conv2d))
    prune.prune_model(m, "block4x4@0.25", where=lambda n, mod: n == "3")
    with torch.no_grad():  # zeros written straight into a weight (no mask buffer): channel pruning
        m[4].weight[::2] = 0
    t = from_module(m.eval(), torch.randn(1, 8, 4, 4))
    ops = by_name(t)
    conv = ops["0"]
    assert conv.weight == NM(2, 4) and conv.meta["weight_source"] == "weight_mask"
    # the mask is 2:4 along K = (c, kh, kw) of the im2col view [16, 72]
    mask = m[0].weight_mask.reshape(16, 72).numpy().astype(bool)
    assert NM(2, 4).check(mask) == [] and conv.weight.stats.row_nnz.tolist() == [36] * 16
    assert ops["3"].weight == Block(4, 4, 0.25)
    assert ops["4"].weight == Channel(0.5, 0) and ops["4"].meta["weight_source"] == "zeros"


def test_semi_structured_weight_if_available():
    if not torch.cuda.is_available():
        pytest.skip("to_sparse_semi_structured needs a CUDA GPU")
    from torch.sparse import to_sparse_semi_structured

    lin = nn.Linear(128, 128).half().cuda().eval()
    w = prune.torch_mask(lin, "2:4").cuda() * lin.weight.detach()
    lin.weight = nn.Parameter(to_sparse_semi_structured(w))
    t = from_module(lin, torch.randn(64, 128, dtype=torch.half, device="cuda"))
    assert t.ops[0].weight == NM(2, 4)


def test_mobilenet_v1_90pct_unstructured_roundtrip_and_simulate(tmp_path):
    model = cnn.build_torch("mobilenet_v1", seed=0)
    masks = prune.prune_model(model, "unstructured@0.1")
    assert len(masks) == 28  # 27 convs + fc
    trace = from_module(model, cnn.example_inputs(1, 64), dtype="fp16")
    weight_ops = [op for op in trace if op.kind in ("gemm", "conv2d")]
    assert len(weight_ops) == 28
    for op in weight_ops:
        size = op.n * op.k * op.batch  # C_out · (C_in/g)·kh·kw: every weight of the layer
        assert op.weight.pattern == "unstructured"
        # layer-wise magnitude pruning keeps exactly round(0.1 · size) weights
        assert op.weight.density == round(0.1 * size) / size
        assert op.weight.stats.row_nnz.sum() == round(0.1 * size)
    assert trace.provenance["pruning"][0]["pattern"] == {"pattern": "unstructured", "density": 0.1}
    paths = [trace.save(tmp_path / f"mobilenet{suffix}") for suffix in (".json", ".parquet")]
    res = simsparse.simulate(trace, "h100-sxm")
    assert len(res.to_frame()) == len(trace) and res.total_s > 0
    for path in paths:
        back = Trace.load(path)
        assert back.ops == trace.ops
        for a, b in zip(back.ops, trace.ops, strict=True):
            if a.weight.stats is not None:
                assert np.array_equal(a.weight.stats.row_nnz, b.weight.stats.row_nnz)
        assert simsparse.simulate(back, "h100-sxm").total_s == pytest.approx(res.total_s)


def test_resnet50_2to4_roundtrip_and_simulate(tmp_path):
    model = cnn.build_torch("resnet50", seed=0)
    prune.prune_model(model, "2:4")
    assert model.simsparse_pruning[0]["skipped"] == ["conv1.conv"]  # K = 3·7·7 = 147 is not a multiple of 4
    trace = from_module(model, cnn.example_inputs(1, 32), dtype="fp16")
    weight_ops = [op for op in trace if op.kind in ("gemm", "conv2d")]
    assert len(weight_ops) == 54  # 53 convs + fc
    for op in weight_ops:
        if op.name == "conv1.conv":
            assert op.weight == Dense()
        else:
            assert op.weight == NM(2, 4) and op.weight.density == 0.5
            assert op.meta["weight_density"] == 0.5 and op.meta["weight_transposable"] is False
            assert set(op.weight.stats.row_nnz.tolist()) == {op.k // 2}  # K/2 kept in every row
    ref = by_name(trace)["layer3.2.conv2.conv"].weight.stats.tile_nnz
    for suffix in (".json", ".parquet"):
        back = Trace.load(trace.save(tmp_path / f"resnet50{suffix}"))
        assert back.ops == trace.ops
        assert np.array_equal(by_name(back)["layer3.2.conv2.conv"].weight.stats.tile_nnz, ref)
    df = simsparse.simulate(back, "h100-sxm").to_frame()
    assert len(df) == len(back) and (df.weight_pattern == "2:4").sum() == 53


def test_cnn_torch_models_match_tables_and_published_parameter_counts():
    published = {"mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548,
                 "resnet18": 11_689_512, "resnet50": 25_557_032}  # Keras / torchvision model cards
    for name, count in published.items():
        model = cnn.build_torch(name)
        assert sum(p.numel() for p in model.parameters()) == count, name
        traced = from_module(model, cnn.example_inputs(1, 32), dtype="fp16")
        table = cnn.trace(name, batch=1, image_size=32)
        key = [(o.name, o.kind, o.m, o.n, o.k, o.batch, o.flops, o.conv) for o in table]
        assert [(o.name, o.kind, o.m, o.n, o.k, o.batch, o.flops, o.conv) for o in traced] == key, name


# --- activation sparsity --------------------------------------------------------------------------
def relu_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(32, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 8)).eval()


def direct_input_density(model, x, pred=lambda t: t != 0):
    """Density of each Linear's input counted with plain forward pre-hooks (the reference)."""
    out = {}
    hooks = [mod.register_forward_pre_hook(lambda m, a, n=name: out.__setitem__(n, float(pred(a[0]).float().mean())))
             for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def test_measured_relu_densities_within_1pct_of_a_direct_count():
    model, x = relu_net(), torch.randn(64, 32)
    t = activations.capture(model, x, "measured")
    got, ref = activations.densities(t), direct_input_density(model, x)
    assert set(got) == set(ref) == {"0", "2", "4"}
    for name in ref:
        assert abs(got[name] - ref[name]) <= 0.01
    ops = by_name(t)
    assert ops["2"].activation.source == "relu" and ops["0"].activation.source == "measured"
    assert ops["0"].activation.density == 1.0  # the network input has no zeros
    assert ops["2"].activation.stats.row_nnz.shape == (64,)  # per-token nonzeros
    # bwd: ReLU zeros in dY of the GEMM feeding it
    assert ops["0"].meta["grad_output_density"] == pytest.approx(ref["2"])


def test_measured_conv_activation_density():
    model = cnn.build_torch("resnet18")
    x = cnn.example_inputs(1, 64)
    t = activations.capture(model, x, "measured", dtype="fp16")
    ops = by_name(t)
    ref = {}
    hook = model.layer1[0].conv2.conv.register_forward_pre_hook(
        lambda m, a: ref.__setitem__("d", float((a[0] != 0).float().mean())))
    with torch.no_grad():
        model(x)
    hook.remove()
    op = ops["layer1.0.conv2.conv"]
    assert op.activation.source == "relu" and abs(op.activation.density - ref["d"]) <= 0.01


def test_teal_threshold_hits_the_target_density_per_layer():
    model, x = relu_net(), torch.randn(128, 32)
    pol = activations.Threshold(0.4)
    t = activations.capture(model, x, pol)
    dens = activations.densities(t)
    for name in ("0", "2", "4"):
        assert abs(dens[name] - 0.4) <= 0.01 or dens[name] <= 0.4  # ReLU zeros may already exceed it
        assert by_name(t)[name].activation.source == "threshold"
        assert by_name(t)[name].meta["threshold"] == pol.thresholds[name]
    assert abs(dens["0"] - 0.4) <= 0.01  # the dense input: exactly the calibrated fraction
    # the threshold is the calibrated quantile of |x|: count it directly on the input
    assert abs(float((x.abs() > pol.thresholds["0"]).float().mean()) - 0.4) <= 0.01


def test_topk_keeps_k_per_token_and_oracle_marks_producers():
    model, x = relu_net(), torch.randn(16, 32)
    t = activations.capture(model, x, "topk@0.25")
    ops = by_name(t)
    assert ops["0"].activation.density == 8 / 32 and ops["0"].meta["topk"] == 8
    assert ops["2"].activation.density == 24 / 96
    assert set(ops["0"].activation.stats.row_nnz.tolist()) == {8}
    mlp = nn.Sequential()
    mlp.fc1, mlp.act, mlp.fc2 = nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 32)
    t = activations.capture(mlp.eval(), x, "oracle")
    ref = direct_input_density(mlp, x)["fc2"]
    o = by_name(t)
    assert o["fc2"].activation.source == "predictor" and abs(o["fc2"].activation.density - ref) <= 0.01
    assert o["fc1"].meta["output_density"] == pytest.approx(ref)
    assert o["fc1"].activation == Dense()  # not an MLP output: untouched


class TinyMoE(nn.Module):
    """HF-Mixtral-style block: `gate`, `num_experts`, `top_k`, experts run on routed tokens only."""

    def __init__(self, d=16, ffn=32, num_experts=4, top_k=2):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.gate = nn.Linear(d, num_experts, bias=False)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d))
                                     for _ in range(num_experts))

    def forward(self, x):
        logits = self.gate(x)
        w, idx = logits.softmax(-1).topk(self.top_k, dim=-1)
        out = torch.zeros_like(x)
        for e in range(self.num_experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if len(tok):
                out[tok] += w[tok, slot, None] * self.experts[e](x[tok])
        return out


def test_moe_routing_counts_from_a_real_forward_pass():
    torch.manual_seed(5)
    moe, x = TinyMoE().eval(), torch.randn(40, 16)
    t = from_module(moe, x)
    gate = by_name(t)["gate"]
    direct = torch.bincount(moe.gate(x).topk(2, -1).indices.flatten(), minlength=4).tolist()
    assert gate.meta["tokens_per_expert"] == direct and sum(direct) == 40 * 2
    assert gate.meta["role"] == "router" and workloads.activations.expert_counts(t) == {"gate": direct}
    for e, count in enumerate(direct):
        if count:
            op = by_name(t)[f"experts.{e}.0"]
            assert op.m == count and op.meta["expert"] == e
    assert activations.routing_counts(moe.gate(x).detach().numpy(), 2) == direct


# --- training -------------------------------------------------------------------------------------
def test_training_from_module_transposable_masks_stay_nm_in_bwd_data():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.Linear(64, 64)).eval()
    prune.prune_model(model, "2:4", where=lambda n, m: n == "0")
    prune.prune_model(model, "2:4", transposable=True, where=lambda n, m: n == "2")
    x = torch.randn(32, 64)
    t = from_module(model, x, training=True, activations="measured")
    ops = by_name(t)
    assert "0.bwd_data" not in ops  # the first layer reads the input: no dX needed
    assert ops["2"].meta["weight_transposable"] is True and ops["0"].meta["weight_transposable"] is False
    bd2 = ops["2.bwd_data"]
    assert bd2.weight == NM(2, 4) and (bd2.m, bd2.n, bd2.k) == (32, 128, 64)
    # stats of Wᵀ: per-row counts are W's per-column counts (a transposable 2:4 mask keeps half)
    assert set(bd2.weight.stats.row_nnz.tolist()) == {32}
    bw0 = ops["0.bwd_weight"]
    assert (bw0.m, bw0.n, bw0.k) == (128, 64, 32) and not bw0.weight_is_param
    # dY of layer 0 is zero where the ReLU after it is: its density is the next layer's input density
    assert bw0.activation.source == "relu"
    assert bw0.activation.density == pytest.approx(ops["2"].activation.density)
    assert ops["2.bwd_weight"].weight.source == "relu"  # Xᵀ of layer 2: the ReLU output
    plain = training_nm_unstructured(ops)
    assert plain == Unstructured(0.5)


def training_nm_unstructured(ops):
    """A non-transposable 2:4 weight whose dX GEMM is needed: layer 3 (pruned below)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)).eval()
    prune.prune_model(model, "2:4")
    t = from_module(model, torch.randn(8, 64), training=True)
    return by_name(t)["1.bwd_data"].weight


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_extract_builtin_and_entry_point(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from simsparse.cli import app

    runner = CliRunner()
    out = tmp_path / "r18.json"
    res = runner.invoke(app, ["extract", "resnet18", "--prune", "2:4", "-o", str(out), "--rows", "3"])
    assert res.exit_code == 0, res.output
    assert "resnet18" in res.output and "more ops" in res.output
    t = Trace.load(out)
    assert sum(op.weight == NM(2, 4) for op in t) == 20  # 21 convs − conv1 (K = 147) + fc
    src = tmp_path / "mymodel.py"
    src.write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                   "    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))\n"
                   "    return m.eval(), torch.randn(4, 16)\n")
    out2 = tmp_path / "mine.parquet"
    res = runner.invoke(app, ["extract", f"{src}:make", "-o", str(out2), "--prune", "unstructured@0.25",
                              "--activations", "measured"])
    assert res.exit_code == 0, res.output
    t2 = Trace.load(out2)
    assert t2.provenance["entry_point"] == f"{src}:make"
    assert by_name(t2)["2"].activation.source == "relu"
    res = runner.invoke(app, ["extract", "llama-2-7b", "--phase", "decode", "-s", "all linears 2:4", "-o",
                              str(tmp_path / "l.json"), "--rows", "0"])
    assert res.exit_code == 0 and Trace.load(tmp_path / "l.json").provenance["recipe"]
