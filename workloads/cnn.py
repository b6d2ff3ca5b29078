"""CNN zoo without torchvision: exact layer tables → traces (no torch), and the same tables
built as small torch modules (for pruning, tracing and activation capture).

One table per network is the single source of truth; `trace(name, batch)` walks it tracking
the feature-map shape and emits the ops, `build_torch(name)` turns it into an nn.Module whose
module paths are the op names, so `from_module(build_torch(n), x)` and `trace(n)` agree op
for op (tests check it). Architectures follow the papers and torchvision's definitions:

* mobilenet_v1  — Howard et al. 2017, width 1.0, 224² (4.2 M parameters, 569 M mult-adds)
* mobilenet_v2  — Sandler et al. 2018, width 1.0 (torchvision mobilenet_v2)
* efficientnet_b0 — Tan & Le 2019 (torchvision efficientnet_b0: MBConv + squeeze-excite, SiLU)
* resnet18 / resnet50 — He et al. 2016, torchvision v1.5 (stride on the 3×3 conv)

Every conv is followed by batch norm (inference: a scale and shift, 2 FLOPs per element)
unless the table says otherwise; convs have no bias, classifiers do (as in torchvision).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import ConvGeom, Op, Trace
from workloads.torch_extract import ELTWISE_FLOPS

ACT_FLOPS_KEY = {"relu": "relu", "relu6": "hardtanh", "silu": "silu", "sigmoid": "sigmoid",
                 "hardswish": "hardswish"}


# --- table node types -------------------------------------------------------------------------
@dataclass(frozen=True)
class Conv:
    """conv (k×k, stride, groups; padding (k-1)//2) → batch norm → activation."""

    name: str
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    groups: int = 1
    act: str | None = "relu"
    bn: bool = True
    bias: bool = False


@dataclass(frozen=True)
class Seq:
    """A named group of nodes run one after another (no ops of its own)."""

    name: str
    body: tuple[Any, ...]


@dataclass(frozen=True)
class Residual:
    """body(x) + shortcut(x) (identity when no shortcut nodes), then an optional activation."""

    name: str
    body: tuple[Any, ...]
    shortcut: tuple[Any, ...] = ()
    act: str | None = None


@dataclass(frozen=True)
class SE:
    """Squeeze-excite: x · sigmoid(fc2(act(fc1(avgpool(x))))) with 1×1 convs with bias."""

    name: str
    c: int
    squeeze: int
    act: str = "silu"


@dataclass(frozen=True)
class Pool:
    """max pool (k, stride, pad) or global average pool (kind="avg")."""

    name: str
    kind: str = "avg"
    k: int = 3
    stride: int = 2
    pad: int = 1


@dataclass(frozen=True)
class Linear:
    name: str
    cin: int
    cout: int


@dataclass(frozen=True)
class Flatten:
    name: str = "flatten"


@dataclass(frozen=True)
class Table:
    """A network: its nodes and where its numbers come from."""

    name: str
    nodes: tuple[Any, ...]
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# --- the tables ---------------------------------------------------------------------------------
def mobilenet_v1(num_classes: int = 1000, width: float = 1.0) -> Table:
    # (stride, c_out) of the 13 depthwise-separable blocks (Howard et al. 2017, Table 1)
    blocks = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 \
        + [(2, 1024), (1, 1024)]

    def depth(c: int) -> int:  # width multiplier as TF-slim mobilenet_v1.py: max(int(c * width), 8)
        return max(int(c * width), 8)

    feats: list[Any] = [Conv("0", 3, depth(32), 3, 2)]
    cin = depth(32)
    for i, (s, c) in enumerate(blocks, start=1):
        feats.append(Seq(str(i), (Conv("dw", cin, cin, 3, s, groups=cin), Conv("pw", cin, depth(c), 1))))
        cin = depth(c)
    nodes = (Seq("features", tuple(feats)), Pool("avgpool"), Flatten(), Linear("fc", cin, num_classes))
    name = "mobilenet_v1" if width == 1.0 else f"mobilenet_v1_{width:g}"
    return Table(name, nodes, f"Howard et al. 2017 (arXiv:1704.04861) Table 1, width {width:g}")


def _divisible8(v: float) -> int:
    """Round a scaled channel count to a multiple of 8, never 10 % below it (Sandler et al.'s
    _make_divisible, TF-slim mobilenet/conv_blocks.py)."""
    out = max(8, int(v + 4) // 8 * 8)
    return out + 8 if out < 0.9 * v else out


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0) -> Table:
    # (expansion t, c_out, repeats n, stride s) — Sandler et al. 2018, Table 2
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    c0 = _divisible8(32 * width)
    feats: list[Any] = [Conv("0", 3, c0, 3, 2, act="relu6")]
    cin, idx = c0, 1
    for t, c, n, s in settings:
        c = _divisible8(c * width)
        for j in range(n):
            stride = s if j == 0 else 1
            hid = cin * t
            body: list[Any] = [] if t == 1 else [Conv("expand", cin, hid, 1, act="relu6")]
            body += [Conv("dw", hid, hid, 3, stride, groups=hid, act="relu6"),
                     Conv("project", hid, c, 1, act=None)]
            node = Residual(str(idx), tuple(body)) if stride == 1 and cin == c else Seq(str(idx), tuple(body))
            feats.append(node)
            cin, idx = c, idx + 1
    # below width 1 the last conv keeps its 1280 channels (Sandler et al. 2018 apply the multiplier
    # to every layer but the last conv in that case); above 1 it widens with the rest
    last = _divisible8(1280 * width) if width > 1.0 else 1280
    feats.append(Conv(str(idx), cin, last, 1, act="relu6"))
    nodes = (Seq("features", tuple(feats)), Pool("avgpool"), Flatten(), Linear("classifier", last, num_classes))
    name = "mobilenet_v2" if width == 1.0 else f"mobilenet_v2_{width:g}"
    return Table(name, nodes, f"Sandler et al. 2018 (arXiv:1801.04381) Table 2; torchvision mobilenet_v2; "
                 f"width {width:g}")


def efficientnet_b0(num_classes: int = 1000) -> Table:
    # (expand ratio, kernel, stride, c_in, c_out, layers) — Tan & Le 2019, Table 1
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    feats: list[Any] = [Conv("0", 3, 32, 3, 2, act="silu")]
    for si, (e, k, s, cin0, cout, layers) in enumerate(stages, start=1):
        blocks: list[Any] = []
        for j in range(layers):
            cin = cin0 if j == 0 else cout
            stride = s if j == 0 else 1
            hid = cin * e
            body: list[Any] = [] if e == 1 else [Conv("expand", cin, hid, 1, act="silu")]
            body += [Conv("dw", hid, hid, k, stride, groups=hid, act="silu"),
                     SE("se", hid, max(1, cin // 4)),
                     Conv("project", hid, cout, 1, act=None)]
            blocks.append(Residual(str(j), tuple(body)) if stride == 1 and cin == cout
                          else Seq(str(j), tuple(body)))
        feats.append(Seq(str(si), tuple(blocks)))
    feats.append(Conv("8", 320, 1280, 1, act="silu"))
    nodes = (Seq("features", tuple(feats)), Pool("avgpool"), Flatten(), Linear("classifier", 1280, num_classes))
    return Table("efficientnet_b0", nodes, "Tan & Le 2019 (arXiv:1905.11946) Table 1; torchvision efficientnet_b0")


def _resnet(name: str, block: str, layers: list[int], num_classes: int) -> Table:
    expansion = 4 if block == "bottleneck" else 1
    nodes: list[Any] = [Conv("conv1", 3, 64, 7, 2), Pool("maxpool", "max", 3, 2, 1)]
    cin = 64
    for li, (width, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        blocks = []
        for j in range(n):
            stride = 2 if j == 0 and li > 1 else 1
            cout = width * expansion
            if block == "bottleneck":
                body = (Conv("conv1", cin, width, 1), Conv("conv2", width, width, 3, stride),
                        Conv("conv3", width, cout, 1, act=None))
            else:
                body = (Conv("conv1", cin, width, 3, stride), Conv("conv2", width, width, 3, act=None))
            short = (Conv("downsample", cin, cout, 1, stride, act=None),) if stride != 1 or cin != cout else ()
            blocks.append(Residual(str(j), body, short, act="relu"))
            cin = cout
        nodes.append(Seq(f"layer{li}", tuple(blocks)))
    nodes += [Pool("avgpool"), Flatten(), Linear("fc", 512 * expansion, num_classes)]
    return Table(name, tuple(nodes), "He et al. 2016 (arXiv:1512.03385) Table 1; torchvision v1.5 "
                 "(stride on the 3x3 conv)")


def resnet18(num_classes: int = 1000) -> Table:
    return _resnet("resnet18", "basic", [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000) -> Table:
    return _resnet("resnet50", "bottleneck", [3, 4, 6, 3], num_classes)


TABLES: dict[str, Callable[..., Table]] = {
    "mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2, "efficientnet_b0": efficientnet_b0,
    "resnet18": resnet18, "resnet50": resnet50,
}


def cnn_names() -> list[str]:
    return sorted(TABLES)


WIDTH_SCALED = ("mobilenet_v1", "mobilenet_v2")  # tables that take a width multiplier


def table(name: str, num_classes: int = 1000, width: float = 1.0) -> Table:
    key = name.lower().replace("-", "_")
    if key not in TABLES:
        raise bad("model", name, ", ".join(cnn_names()))
    if width != 1.0:
        if key not in WIDTH_SCALED:
            raise bad("width", width, f"1.0 for {key} (width multipliers: {', '.join(WIDTH_SCALED)})")
        return TABLES[key](num_classes, width=width)
    return TABLES[key](num_classes)


# --- table → trace (no torch) -------------------------------------------------------------------
class _Builder:
    def __init__(self, batch: int, dtype: str):
        self.batch, self.dtype = batch, dtype
        self.ops: list[Op] = []

    def eltwise(self, name: str, numel: int, key: str, n_inputs: int = 1, numel_out: int | None = None,
                **meta: Any) -> None:
        op = Op.eltwise(numel, dtype=self.dtype, flops_per_elem=ELTWISE_FLOPS[key], n_inputs=n_inputs, name=name,
                        numel_out=numel_out)
        op.meta.update(op_type=key, **meta)
        self.ops.append(op)

    def walk(self, nodes: tuple[Any, ...], shape: tuple[int, int, int], path: str) -> tuple[int, int, int]:
        for node in nodes:
            shape = self.node(node, shape, f"{path}{node.name}")
        return shape

    def node(self, nd: Any, shape: tuple[int, int, int], p: str) -> tuple[int, int, int]:
        c, h, w = shape
        b = self.batch
        if isinstance(nd, Conv):
            if c != nd.cin:
                raise bad(f"{p}.cin", nd.cin, f"the incoming channel count {c}")
            geom = ConvGeom(b, c, h, w, nd.cout, nd.k, nd.k, nd.stride, (nd.k - 1) // 2, 1, nd.groups)
            op = Op.conv2d(geom, dtype=self.dtype, name=f"{p}.conv")
            op.meta.update(role="conv", bias=nd.bias)
            if geom.is_depthwise:
                op.meta["depthwise"] = True
            self.ops.append(op)
            numel = b * nd.cout * geom.h_out * geom.w_out
            if nd.bn:
                self.eltwise(f"{p}.bn", numel, "batch_norm")
            if nd.act:
                self.eltwise(f"{p}.act", numel, ACT_FLOPS_KEY[nd.act])
            return nd.cout, geom.h_out, geom.w_out
        if isinstance(nd, Seq):
            return self.walk(nd.body, shape, f"{p}.")
        if isinstance(nd, Residual):
            out = self.walk(nd.body, shape, f"{p}.")
            short = self.walk(nd.shortcut, shape, f"{p}.") if nd.shortcut else shape
            if out != short:
                raise bad(f"{p}.shortcut", short, f"the body's output shape {out}")
            numel = b * out[0] * out[1] * out[2]
            self.eltwise(f"{p}.add", numel, "add", n_inputs=2)
            if nd.act:
                self.eltwise(f"{p}.act", numel, ACT_FLOPS_KEY[nd.act])
            return out
        if isinstance(nd, SE):
            self.eltwise(f"{p}.avgpool", b * c * h * w, "pool", numel_out=b * c, pool="avg", c=c, h=h, w=w)
            self.walk((Conv("fc1", c, nd.squeeze, act=nd.act, bn=False, bias=True),
                       Conv("fc2", nd.squeeze, c, act="sigmoid", bn=False, bias=True)), (c, 1, 1), f"{p}.")
            self.eltwise(f"{p}.mul", b * c * h * w, "mul")
            return shape
        if isinstance(nd, Pool):
            if nd.kind == "avg":
                self.eltwise(p, b * c * h * w, "pool", numel_out=b * c, pool="avg", c=c, h=h, w=w)
                return c, 1, 1
            oh, ow = (h + 2 * nd.pad - nd.k) // nd.stride + 1, (w + 2 * nd.pad - nd.k) // nd.stride + 1
            self.eltwise(p, b * c * h * w, "pool", numel_out=b * c * oh * ow, pool="max", c=c, h=h, w=w, k=nd.k,
                         stride=nd.stride, pad=nd.pad)
            return c, oh, ow
        if isinstance(nd, Flatten):
            return c * h * w, 1, 1
        if isinstance(nd, Linear):
            if c * h * w != nd.cin:
                raise bad(f"{p}.cin", nd.cin, f"the incoming feature count {c * h * w}")
            op = Op.gemm(b, nd.cout, nd.cin, dtype=self.dtype, name=p)
            op.meta.update(role="head", bias=True)
            self.ops.append(op)
            return nd.cout, 1, 1
        raise bad(p, type(nd).__name__, "Conv, Seq, Residual, SE, Pool, Flatten, Linear")


# element-wise ops a deployed CNN runtime (XNNPACK, TFLite, ONNX Runtime) does not run: batch norm is
# folded into the preceding conv's weights and bias, ReLU / ReLU6 (hardtanh) become the conv's output clamp
FOLDED_AT_DEPLOYMENT = ("batch_norm", "relu", "hardtanh")


def fold_for_deployment(t: Trace) -> Trace:
    """The trace as a deployed runtime executes it: without the batch norms and ReLU / ReLU6 ops it folds
    into the convolutions (FOLDED_AT_DEPLOYMENT). SiLU, sigmoid, hard-swish, squeeze-excite, residual
    adds and pooling stay. `trace()` keeps every op, as PyTorch eager runs them."""
    ops = tuple(o for o in t.ops if not (o.kind == "eltwise" and o.meta.get("op_type") in FOLDED_AT_DEPLOYMENT))
    return Trace(f"{t.name}[deployed]", ops, t.provenance)


def trace(name: str, batch: int = 1, image_size: int = 224, dtype: str = "fp16",
          num_classes: int = 1000, width: float = 1.0) -> Trace:
    """Inference trace of a zoo CNN from its layer table (torch not needed); `width` is the
    MobileNet width multiplier (1.0: the tables as published)."""
    t = table(name, num_classes, width)
    b = _Builder(batch, dtype)
    b.walk(t.nodes, (3, image_size, image_size), "")
    prov = {"model": t.name, "source": "layer table", "table_source": t.source, "batch": batch,
            "image_size": image_size, "dtype": dtype}
    return Trace(f"{t.name}-b{batch}", tuple(b.ops), prov)


# --- table → torch module -----------------------------------------------------------------------
def build_torch(name: str, num_classes: int = 1000, seed: int | None = 0) -> Any:
    """The zoo CNN as an nn.Module (eval mode). Weights: synthetic, seeded (torch default init
    under torch.manual_seed(seed)) — no trained weights ship with simsparse."""
    import torch

    t = table(name, num_classes)
    if seed is not None:
        torch.manual_seed(seed)
    model = _torch_seq(t.nodes, torch)
    model.simsparse_weights = f"synthetic (torch default init, seed={seed})"
    model.simsparse_name = t.name
    return model.eval()


def _torch_seq(nodes: tuple[Any, ...], torch: Any):
    from collections import OrderedDict

    return torch.nn.Sequential(OrderedDict((n.name, _torch_node(n, torch)) for n in nodes))


def _act(name: str | None, torch: Any):
    nn = torch.nn
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
            "hardswish": nn.Hardswish}[name]()


def _torch_node(nd: Any, torch: Any):
    nn = torch.nn
    if isinstance(nd, Conv):  # conv → bn → act as a Sequential with children conv, bn, act
        from collections import OrderedDict

        parts = [("conv", nn.Conv2d(nd.cin, nd.cout, nd.k, nd.stride, (nd.k - 1) // 2, groups=nd.groups,
                                    bias=nd.bias))]
        if nd.bn:
            parts.append(("bn", nn.BatchNorm2d(nd.cout)))
        if nd.act:
            parts.append(("act", _act(nd.act, torch)))
        return nn.Sequential(OrderedDict(parts))
    if isinstance(nd, Seq):
        return _torch_seq(nd.body, torch)
    if isinstance(nd, Residual):
        return _ResidualModule(nd, torch)
    if isinstance(nd, SE):
        return _SEModule(nd, torch)
    if isinstance(nd, Pool):
        return nn.AdaptiveAvgPool2d(1) if nd.kind == "avg" else nn.MaxPool2d(nd.k, nd.stride, nd.pad)
    if isinstance(nd, Flatten):
        return nn.Flatten(1)
    if isinstance(nd, Linear):
        return nn.Linear(nd.cin, nd.cout)
    raise bad("node", type(nd).__name__, "Conv, Seq, Residual, SE, Pool, Flatten, Linear")


def _ResidualModule(nd: Residual, torch: Any):
    nn = torch.nn

    class ResidualBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body_names = [n.name for n in nd.body]
            self.short_names = [n.name for n in nd.shortcut]
            for n in nd.body + nd.shortcut:
                self.add_module(n.name, _torch_node(n, torch))
            self.act = _act(nd.act, torch) if nd.act else None

        def forward(self, x):
            out = x
            for n in self.body_names:
                out = getattr(self, n)(out)
            short = x
            for n in self.short_names:
                short = getattr(self, n)(short)
            out = out + short
            return self.act(out) if self.act is not None else out

    return ResidualBlock()


def _SEModule(nd: SE, torch: Any):
    nn = torch.nn

    class SqueezeExcite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = _torch_node(Conv("fc1", nd.c, nd.squeeze, act=nd.act, bn=False, bias=True), torch)
            self.fc2 = _torch_node(Conv("fc2", nd.squeeze, nd.c, act="sigmoid", bn=False, bias=True), torch)

        def forward(self, x):
            return x * self.fc2(self.fc1(self.avgpool(x)))

    return SqueezeExcite()


def example_inputs(batch: int = 1, image_size: int = 224, seed: int = 0) -> Any:
    """A seeded random image batch (N, 3, H, W) for tracing / activation capture."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, image_size, image_size, generator=g)


def model_and_inputs(name: str, batch: int = 1, image_size: int = 224, seed: int = 0) -> tuple[Any, Any]:
    """(model, example inputs) — the form `simsparse extract` accepts from an entry point."""
    return build_torch(name, seed=seed), example_inputs(batch, image_size, seed)
