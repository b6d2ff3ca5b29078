"""Plots (matplotlib, headless). Each function writes a PNG and returns its path.

* speedup_bars        time per hardware × weight sparsity (the CLI's quick-start plot)
* roofline            ops of a trace (or sweep points) placed on a machine's roofline
* speedup_heatmap     speed-up over dense: sparsity × tokens, one panel per hardware
* pareto              latency vs energy, with the Pareto front
* validation_scatter  predicted vs measured, log-log, with the y = x line
* breakdown           per-op time of a trace (layers folded), one bar per configuration

Inputs are DataFrames: `SimResult.to_frame()` (one row per op) or `simsparse.sweep(...)`
(one row per point); `plot_cli` is what `simsparse plot` calls.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PLOT_KINDS = ("roofline", "heatmap", "pareto", "validation", "breakdown")
# inputs of a sweep point: rows that agree on all of these except the compared one are a pair
INPUT_COLUMNS = ("source", "workload", "workload_fp", "m", "n", "k", "batch", "seq_len", "phase", "kv_len",
                 "dtype", "weight", "activation", "hardware", "hw_variant", "hw_fp", "overrides", "mapper",
                 "fidelity", "tokens")
DERIVED_INPUTS = {"weight": ("weight_density",), "activation": ("activation_density",)}


def out_path(path: str | Path, field: str = "path") -> Path:
    """The file a plot of `path` is written to: `path`, with .png added when it has no suffix (as
    savefig does); a suffix matplotlib cannot write is refused naming `field`."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(f"{field}: got {str(path)!r}; allowed: a file name ending in "
                         f"{', '.join('.' + f for f in sorted(formats))} (none: .png)")
    return path


def _save(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write `fig` to out_path(path), its folder made, and close it."""
    path = out_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _need(df: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: got a table without column(s) {missing}; allowed: a table with "
                         f"{', '.join(cols)} (have: {', '.join(map(str, df.columns[:20]))})")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that were costed (sweep rows with an error are left out; all of them failing is refused,
    quoting the first error)."""
    if "error" in df.columns:
        failed = df["error"].notna() & (df["error"] != "")
        if len(df) and failed.all():
            raise ValueError(f"source: all {len(df)} points failed, nothing to plot; first error: "
                             f"{df['error'].iloc[0]}")
        df = df[~failed]
    return df[np.isfinite(df["t_s"].astype(float)) & (df["t_s"].astype(float) > 0)] if "t_s" in df else df


def speedup_bars(table: pd.DataFrame, path: str | Path, title: str = "", baseline: str = "dense") -> Path:
    """Grouped bars: time per hardware (groups) and weight sparsity (bars), speed-up annotated."""
    hws = list(dict.fromkeys(table["hardware"]))
    pats = list(dict.fromkeys(table["sparsity"]))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(hws), 4.2))
    width = 0.8 / max(len(pats), 1)
    for j, pat in enumerate(pats):
        sub = table[table.sparsity == pat].set_index("hardware")
        xs = [i + (j - (len(pats) - 1) / 2) * width for i in range(len(hws))]
        ys = [sub["total_s"].get(h, float("nan")) * 1e3 for h in hws]
        bars = ax.bar(xs, ys, width, label=pat)
        if "speedup" in sub:
            for b, h in zip(bars, hws, strict=True):
                s = sub["speedup"].get(h)
                if s is not None and pat != baseline:
                    ax.annotate(f"{s:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(hws)), hws)
    ax.set_ylabel("predicted time (ms)")
    ax.set_title(title)
    ax.legend(title="weight sparsity", fontsize=8)
    return _save(fig, path)


# --- roofline ---------------------------------------------------------------------------------


DRAM_COLUMNS = ("bytes_hbm", "bytes_dram", "bytes_ddr", "bytes_lpddr")


def _dram_bytes(df: pd.DataFrame) -> pd.Series:
    """Bytes moved to/from main memory (the roofline's denominator); all levels if none is named."""
    cols = [c for c in DRAM_COLUMNS if c in df.columns]
    if cols:
        return df[cols].astype(float).fillna(0).sum(axis=1)
    if "bytes_total" in df.columns:
        return df["bytes_total"].astype(float)
    cols = [c for c in df.columns if c.startswith("bytes_")]
    if not cols:
        raise ValueError("frame: got no bytes_* column; allowed: SimResult.to_frame() or sweep rows")
    return df[cols].astype(float).fillna(0).sum(axis=1)


def _op_role(name: str) -> str:
    """'layers.12.q_proj' → 'q_proj' (fold repeated layers)."""
    return re.sub(r"^(.*\.)?(layers|layer|blocks|h)\.\d+\.", "", str(name)) or str(name)


def roofline(frame: pd.DataFrame, hardware: Any, path: str | Path, title: str = "", dtype: str = "fp16",
             annotate: int = 6) -> Path:
    """Ops (or sweep points) on the roofline of one machine.

    x = arithmetic intensity (executed FLOPs / DRAM bytes), y = achieved FLOP/s. Ceilings:
    the dense Tensor Core / SIMD peak, the 2:4 sparse peak where the machine has one, the
    CUDA-core FP32 peak on GPUs, and the DRAM bandwidth slope. Marker area ∝ share of time.
    """
    import hwmodels

    spec = hwmodels.load(hardware)
    df = _ok(frame)
    flops = "executed_flops" if "executed_flops" in df else "flops"  # what the kernels execute (older stores: flops)
    _need(df, [flops, "t_s"], "roofline")
    df = df.assign(_bytes=_dram_bytes(df))
    df = df[(df[flops] > 0) & (df["_bytes"] > 0)]
    if df.empty:
        raise ValueError("roofline: got no op with FLOPs and bytes; allowed: a frame with costed ops")
    ai = df[flops] / df["_bytes"]
    perf = df[flops] / df["t_s"]
    bw = spec.dram_bw
    ceilings = [(f"{dtype} peak", spec.peak_flops(dtype), "-")]
    if getattr(spec, "has_sparse_tc", False):
        ceilings.append(("2:4 sparse peak", spec.peak_flops(dtype, (2, 4)), "--"))
    if hasattr(spec, "cuda_fp32_peak"):
        ceilings.append(("CUDA-core fp32", spec.cuda_fp32_peak, ":"))
    x_lo = min(float(ai.min()) / 3, 0.1)
    x_hi = max(float(ai.max()) * 3, max(c[1] for c in ceilings) / bw * 4)
    xs = np.geomspace(x_lo, x_hi, 200)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    for n_c, (label, peak, ls) in enumerate(ceilings):
        ax.plot(xs, np.minimum(peak, bw * xs), ls=ls, color="0.25", lw=1.3)
        ax.annotate(f"{label} {peak / 1e12:,.0f} TFLOP/s", (x_hi, peak), ha="right",
                    va="top" if n_c == 0 and len(ceilings) > 1 else "bottom", fontsize=8)
    ax.annotate(f"DRAM {bw / 1e9:,.0f} GB/s", (x_lo * 1.5, bw * x_lo * 1.5), rotation=0, fontsize=8,
                va="bottom")
    share = df["t_s"] / df["t_s"].sum()
    kcol = "kernel" if "kernel" in df.columns else None
    groups = df.groupby(kcol, sort=False) if kcol else [("ops", df)]
    for name, g in groups:
        ax.scatter(ai[g.index], perf[g.index], s=20 + 600 * share[g.index], alpha=0.7, label=str(name),
                   edgecolor="k", linewidth=0.4)
    if annotate and "op" in df.columns:
        roles = df.assign(_role=df["op"].map(_op_role), _x=ai.round(6), _y=perf.round(0))
        top = roles.groupby("_role")["t_s"].sum().nlargest(annotate).index
        spots: dict[tuple[float, float], list[str]] = {}
        for role in top:
            r = roles[roles["_role"] == role].iloc[0]
            spots.setdefault((r["_x"], r["_y"]), []).append(role)
        placed: list[tuple[float, float]] = []
        for (px, py), names in spots.items():
            near = sum(1 for qx, qy in placed if max(px, qx) / min(px, qx) < 1.6 and max(py, qy) / min(py, qy) < 1.6)
            placed.append((px, py))  # labels of neighbouring points stack downwards instead of overlapping
            ax.annotate(", ".join(names), (px, py), fontsize=7, xytext=(6, -10 - 9 * near), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (executed FLOP / DRAM byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title or f"roofline on {spec.name}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="kernel", fontsize=8, loc="lower right")
    return _save(fig, path)


# --- speed-up heatmap -----------------------------------------------------------------------


def speedup_table(df: pd.DataFrame, compare: str = "weight", baseline: str = "dense",
                  value: str = "t_s") -> pd.DataFrame:
    """Each row with `speedup` = value of its baseline twin (same inputs, `compare` = baseline) / value."""
    df = _ok(df)
    _need(df, [compare, value], "speedup")
    skip = {compare, *DERIVED_INPUTS.get(compare, ())}
    keys = [c for c in INPUT_COLUMNS if c in df.columns and c not in skip]
    keys += [c for c in df.columns if c.startswith("hw_") and c not in ("hw_variant", "hw_fp") and c not in keys]
    base = df[df[compare] == baseline][keys + [value]].rename(columns={value: "_base"})
    if base.empty:
        have = ", ".join(map(str, df[compare].unique()[:10]))
        raise ValueError(f"baseline: got {baseline!r}; allowed: one of the {compare} values ({have})")
    base = base.drop_duplicates(keys)
    out = df.merge(base, on=keys, how="left")
    out["speedup"] = out["_base"] / out[value]
    return out.drop(columns="_base")


def speedup_heatmap(df: pd.DataFrame, path: str | Path, baseline: str = "dense", x: str = "tokens",
                    y: str = "weight", panel: str = "hw_variant", title: str = "") -> Path:
    """Speed-up over `baseline` (sparsity × tokens), one panel per hardware.

    Points that differ in other inputs (shapes, phases…) are summarised by the geometric mean
    of their speed-ups.
    """
    if panel not in df.columns and panel == "hw_variant":
        panel = "hardware"
    _need(_ok(df), [x, y, panel, "t_s"], "heatmap")
    sp = speedup_table(df, compare=y, baseline=baseline)
    sp = sp[sp[y] != baseline].dropna(subset=["speedup"])
    if sp.empty:
        raise ValueError(f"heatmap: got no non-{baseline} rows with a {baseline} twin; allowed: a sweep "
                         f"with {baseline} and other {y} values")
    sp = sp.assign(_log=np.log(sp["speedup"]))
    agg = sp.groupby([panel, y, x], sort=False)["_log"].mean().map(np.exp).rename("speedup").reset_index()
    panels = list(dict.fromkeys(agg[panel]))
    ys = list(dict.fromkeys(sp[y]))
    xs = sorted(agg[x].dropna().unique())
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    ylab_w = 0.075 * max(len(str(v)) for v in ys)
    fig, axes = plt.subplots(nrow, ncol, squeeze=False, sharey=True, constrained_layout=True,
                             figsize=(ylab_w + 1.2 + max(2.6, 0.55 * len(xs)) * ncol,
                                      0.8 + max(1.9, 0.42 * len(ys) + 0.9) * nrow))
    from matplotlib.colors import TwoSlopeNorm

    vmax = max(float(agg["speedup"].max()), 1.05)
    vmin = min(float(agg["speedup"].min()), 0.95)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=vmin, vmax=vmax)
    im = None
    for n_ax, (ax, p) in enumerate(zip(axes.flat, panels, strict=False)):
        sub = agg[agg[panel] == p].pivot_table(index=y, columns=x, values="speedup", aggfunc="first")
        sub = sub.reindex(index=ys, columns=xs)
        im = ax.imshow(sub.to_numpy(dtype=float), cmap="RdYlGn", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(sub.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs],
                      rotation=45 if len(xs) > 6 else 0, fontsize=8)
        ax.set_yticks(range(len(ys)), ys, fontsize=8)
        ax.set_title(str(p), fontsize=9)
        if n_ax // ncol == nrow - 1 or n_ax + ncol >= len(panels):
            ax.set_xlabel(x)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=f"speed-up over {baseline}")
    fig.suptitle(title or f"speed-up over {baseline} (> 1: sparse is faster)", fontsize=11)
    return _save(fig, path, tight=False)  # its colorbar's layout is set by hand


# --- Pareto front -------------------------------------------------------------------------------


def pareto_front(df: pd.DataFrame, x: str = "t_s", y: str = "energy_j") -> pd.DataFrame:
    """Rows not dominated in (x, y), both minimised, sorted by x."""
    d = _ok(df).dropna(subset=[x, y]).sort_values([x, y])
    keep, best_y = [], np.inf
    for i, v in zip(d.index, d[y].to_numpy(), strict=True):
        if v < best_y:
            keep.append(i)
            best_y = v
    return d.loc[keep]


def pareto(df: pd.DataFrame, path: str | Path, x: str = "t_s", y: str = "energy_j",
           color: str = "hw_variant", label: tuple[str, ...] = ("hw_variant", "weight"), title: str = "") -> Path:
    """Latency vs energy for every point, the Pareto front drawn and its points labelled."""
    d = _ok(df)
    if color not in d.columns:
        color = "hardware" if "hardware" in d.columns else None
    _need(d, [x, y], "pareto")
    front = pareto_front(d, x, y)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    groups = d.groupby(color, sort=False) if color else [("points", d)]
    for name, g in groups:
        ax.scatter(g[x], g[y], s=14, alpha=0.55, label=str(name))
    ax.step(front[x], front[y], where="post", color="k", lw=1.2, label="Pareto front")
    ax.scatter(front[x], front[y], s=40, facecolor="none", edgecolor="k", lw=1.2)
    lab_cols = [c for c in label if c in front.columns]
    for _, r in front.head(12).iterrows():
        ax.annotate(" ".join(str(r[c]) for c in lab_cols), (r[x], r[y]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (s)" if x == "t_s" else x)
    ax.set_ylabel("energy (J)" if y == "energy_j" else y)
    ax.set_title(title or f"latency vs energy: {len(front)} of {len(d)} points on the Pareto front")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


# --- validation ---------------------------------------------------------------------------------


def error_stats(df: pd.DataFrame, predicted: str = "predicted_s", measured: str = "measured_s") -> dict[str, float]:
    """MAPE, median APE, the share within ±25 % and the count, of predicted vs measured."""
    d = df[[predicted, measured]].astype(float).dropna()
    d = d[(d[measured] > 0) & (d[predicted] > 0)]
    ape = (d[predicted] - d[measured]).abs() / d[measured]
    return {"n": len(d), "mape": float(ape.mean()) if len(d) else float("nan"),
            "median_ape": float(ape.median()) if len(d) else float("nan"),
            "within_25pct": float((ape <= 0.25).mean()) if len(d) else float("nan")}


def validation_scatter(df: pd.DataFrame, path: str | Path, predicted: str = "predicted_s",
                       measured: str = "measured_s", color: str | None = None, title: str = "") -> Path:
    """Predicted vs measured (log-log) with y = x and ×2 bands; MAPE in the title."""
    _need(df, [predicted, measured], "validation")
    d = df.copy()
    d[predicted] = pd.to_numeric(d[predicted], errors="coerce")
    d[measured] = pd.to_numeric(d[measured], errors="coerce")
    d = d[(d[predicted] > 0) & (d[measured] > 0)]
    fig, ax = plt.subplots(figsize=(6.4, 6))
    if d.empty:
        ax.text(0.5, 0.5, "no rows with both predicted and measured values", ha="center", va="center",
                transform=ax.transAxes)
        lo, hi = 1e-6, 1e-1
    else:
        lo = float(min(d[predicted].min(), d[measured].min())) / 2
        hi = float(max(d[predicted].max(), d[measured].max())) * 2
        if color and color in d.columns:
            for name, g in d.groupby(color, sort=False):
                ax.scatter(g[measured], g[predicted], s=16, alpha=0.7, label=str(name))
            ax.legend(fontsize=7, title=color, loc="upper left")
        else:
            ax.scatter(d[measured], d[predicted], s=16, alpha=0.7)
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.plot(xs, xs * 2, "k:", lw=0.8)
    ax.plot(xs, xs / 2, "k:", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    unit = " (s)" if measured.endswith("_s") else ""
    ax.set_xlabel(f"measured{unit}")
    ax.set_ylabel(f"predicted{unit}")
    st = error_stats(d, predicted, measured) if not d.empty else {"n": 0}
    head = title or "predicted vs measured"
    if st["n"]:
        head += (f"\nn={st['n']}  MAPE {st['mape']:.0%}  median {st['median_ape']:.0%}  "
                 f"within ±25%: {st['within_25pct']:.0%}   (dotted: ×2)")
    ax.set_title(head, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


# --- per-op breakdown ---------------------------------------------------------------------------


def breakdown(frame: pd.DataFrame, path: str | Path, title: str = "", label: str | None = None,
              top: int = 14) -> Path:
    """Per-op time of a trace, repeated layers folded ('layers.3.q_proj' → 'q_proj').

    `frame` is `SimResult.to_frame()`; concatenate several with a `label` column (e.g.
    sparsity or hardware) to compare them side by side. Colours inside a bar: bound-by.
    """
    _need(frame, ["op", "t_s"], "breakdown")
    d = frame.assign(_role=frame["op"].map(_op_role))
    if label is None:
        label = next((c for c in ("label", "sparsity", "hardware") if c in d.columns and d[c].nunique() > 1),
                     None)
    d["_label"] = d[label].astype(str) if label else "trace"
    per = d.groupby(["_role", "_label"], sort=False)["t_s"].sum().unstack("_label").fillna(0.0) * 1e3
    order = per.max(axis=1).sort_values(ascending=False).index
    if len(order) > top + 1:
        rest = per.loc[order[top:]].sum()
        per = pd.concat([per.loc[order[:top]], rest.to_frame("other").T])
    else:
        per = per.loc[order]
    labels = list(dict.fromkeys(d["_label"]))
    per = per[labels]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(per) * max(1, len(labels)) ** 0.5))
    h = 0.8 / len(labels)
    ys = np.arange(len(per))
    for j, lab in enumerate(labels):
        ax.barh(ys + (j - (len(labels) - 1) / 2) * h, per[lab], h, label=lab)
    ax.set_yticks(ys, per.index, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("predicted time (ms, summed over layers)")
    totals = ", ".join(f"{lab}: {per[lab].sum():.3g} ms" for lab in labels)
    ax.set_title(title + ("\n" if title else "") + f"total {totals}", fontsize=10)
    if len(labels) > 1:
        ax.legend(fontsize=8, title=None if label == "label" else label)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


# --- the `simsparse plot` command ---------------------------------------------------------------


def _trace_frames(source: str, hardware: list[str], sparsity: list[str], **kw: Any) -> pd.DataFrame:
    import workloads
    from simsparse.api import simulate
    from simsparse.core.ops import Trace

    if Trace.is_trace_file(source):
        base = Trace.load(source)
        sparsity = sparsity or ["as-traced"]
    else:
        base = workloads.get(source, **kw)
        sparsity = sparsity or ["dense"]
    frames = []
    for pat in sparsity:
        trace = base if pat == "as-traced" else workloads.apply_sparsity(base, pat)
        for hw in hardware:
            f = simulate(trace, hw).to_frame()
            f["sparsity"] = pat
            f["label"] = f"{hw} {pat}" if len(hardware) > 1 and len(sparsity) > 1 else (
                hw if len(hardware) > 1 else pat)
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def plot_cli(kind: str, source: str, out: str | Path | None = None, *, hardware: list[str] | None = None,
             sparsity: list[str] | None = None, batch: int = 16, seq_len: int = 1, phase: str = "decode",
             kv_len: int = 2048, predicted: str = "predicted_s", measured: str = "measured_s",
             baseline: str = "dense", x: str = "tokens", title: str = "") -> Path:
    """What `simsparse plot KIND SOURCE` does: read the source, draw, return the PNG path.

    roofline, breakdown: SOURCE is a workload name or a trace file (simulated on --hardware);
    heatmap, pareto: SOURCE is a sweep results directory (or .parquet/.csv);
    validation: SOURCE is a table with predicted and measured columns (.parquet/.csv/.jsonl).
    """
    from simsparse.store import read_results

    if kind not in PLOT_KINDS:
        raise ValueError(f"kind: got {kind!r}; allowed: {', '.join(PLOT_KINDS)}")
    out = Path(out) if out else Path("simsparse-out") / f"{kind}.png"
    if kind in ("roofline", "breakdown"):
        hardware = hardware or ["h100-sxm"]
        frame = _trace_frames(source, hardware if kind == "breakdown" else hardware[:1], sparsity or [],
                              batch=batch, seq_len=seq_len, phase=phase, kv_len=kv_len)
        name = Path(source).stem if Path(source).suffix else f"{source} {phase}, batch {batch}"
        if sparsity and len(sparsity) == 1:
            name += f", {sparsity[0]}"
        if kind == "roofline":
            return roofline(frame, hardware[0], out, title=title or f"{name} on {hardware[0]}")
        return breakdown(frame, out, title=title or name)
    df = read_results(source)
    if kind == "heatmap":
        return speedup_heatmap(df, out, baseline=baseline, x=x, title=title)
    if kind == "pareto":
        return pareto(df, out, title=title)
    return validation_scatter(df, out, predicted=predicted, measured=measured,
                              color="kernel" if "kernel" in df.columns else None, title=title)
