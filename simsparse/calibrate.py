"""Fit a GPU spec's efficiency parameters on the fit half of measured kernels; write them to YAML.

Only rows of the fit half (`simsparse.validate.half_of`: crc32 of "N x K" even) are used; the
held-out half is never read here. Parameters are fitted family by family, each with few free
parameters of physical meaning (`hwmodels.gpu.PARAMS`):

1. machine: `launch_s` = the empty-kernel ceiling (device time behind a host lead), `hbm_eff` =
   the device-to-device copy ceiling / datasheet bandwidth: measured directly, not fitted;
2. `cublas.tc_eff`, `mem_latency_s` on cuBLAS fp16/bf16 rows (`cublas.simt_eff` on fp32 rows);
3. `cusparselt.tc_eff` on cuSPARSELt rows (all call paths: their device time is one kernel);
4. `cusparse_csr.*` on cuSPARSE CSR rows (torch + CuPy: CuPy's column-major path has its own);
5. `cusparse_bsr.*`, `bsr_tc.*`, `act_gemv.hbm_eff` on their rows;
6. `host_s.<kernel>.<variant>`: geometric mean of the measured host time per eager call.

Each fit is `scipy.optimize.least_squares` on log(predicted) - log(measured) over log-scaled
parameters within the bounds of `PARAMS`. The fitted values go into the spec's `efficiency:`
block with source = the data file(s), the rule and the date; `transfer` copies the SM-level ones
to another spec of the same SM (H100 from H200: the same GH100 SM), saying so in the source.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

import hwmodels
from hwmodels import gpu as model
from hwmodels.spec import SPEC_DIR, GPUSpec
from simsparse.validate import (
    DATA_DIR,
    HELD_FROM_FIT,
    UNSEEN_CAMPAIGNS,
    Case,
    Dataset,
    load,
    predict_case,
)

# family → (cases selector, free parameters)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cublas": ("cublas:half", ("cublas.tc_eff", "tc_rate.bf16", "gemm_hbm_eff", "mem_latency_s", "l2_dirty_frac",
                               "epilogue_bytes_per_clk")),
    "cublas_fp32": ("cublas:fp32", ("cublas.simt_eff",)),
    "cusparselt": ("cusparselt:searched", ("cusparselt.tc_eff", "cusparselt.cta_cycles", "cusparselt.hbm_frac",
                                           "cusparselt.bf16_searched_small_m_hbm_frac")),
    "cusparselt_default": ("cusparselt:default", ("cusparselt.default_tc_eff", "cusparselt.default_plan_s",
                                                    "cusparselt.bf16_small_m_hbm_frac",
                                                    "cusparselt.fp16_small_m_hbm_frac",
                                                    "cusparselt.segment_fixup_s")),
    "cusparse_csr": ("cusparse_csr", ("cusparse_csr.fixed_s", "cusparse_csr.flop_eff", "cusparse_csr.cycles_per_segment_colmajor",
                                      "cusparse_csr.cycles_per_nnz", "cusparse_csr.cycles_per_l2_segment_colmajor",
                                      "cusparse_csr.fixed_s_cupyx")),
    "cusparse_bsr": ("cusparse_bsr:half", ("cusparse_bsr.fixed_s", "cusparse_bsr.gather_eff", "cusparse_bsr.cycles_per_block",
                                          "cusparse_bsr.cycles_per_value")),
    "cusparse_bsr_fp32": ("cusparse_bsr:fp32", ("cusparse_bsr.fixed_s_fp32", "cusparse_bsr.gather_eff_fp32",
                                                "cusparse_bsr.cycles_per_block_fp32",
                                                "cusparse_bsr.cycles_per_value_fp32")),
    "bsr_tc": ("bsr_tc", ("bsr_tc.tc_eff", "bsr_tc.cycles_per_block", "bsr_tc.latency_per_block", "bsr_tc.fixed_s",
                          "bsr_tc.cycles_per_token")),
    "act_gemv": ("act_gemv", ("act_gemv.hbm_eff", "act_gemv.atomics_per_s", "act_gemv.atomic_serial_s")),
    # fused attention (torch SDPA): cuDNN's Hopper kernel (softmax overlapped), then FlashAttention-2
    "flash_attention": ("flash_attention:cudnn", ("flash_attention.tc_eff", "flash_attention.fixed_s",
                                                  "flash_attention.hbm_frac")),
    "flash_attention_fa2": ("flash_attention:fa2", ("flash_attention.fa2_tc_eff",)),
    "grouped_gemm": ("grouped_gemm", ("grouped_gemm.tc_eff", "grouped_gemm.hbm_frac")),
}
# parameters that describe the SM (or the host software path), not the memory system
SM_LEVEL = ("cublas.tc_eff", "cublas.simt_eff", "tc_rate.bf16", "cusparselt.tc_eff", "cusparselt.default_tc_eff",
            "cusparselt.default_plan_s", "cusparselt.segment_fixup_s", "cusparselt.cta_cycles", "cusparse_csr.flop_eff", "cusparse_csr.cycles_per_segment_colmajor",
            "cusparse_csr.cycles_per_l2_segment_colmajor", "cusparse_csr.fixed_s_cupyx",
            "cusparse_csr.cycles_per_nnz", "cusparse_csr.fixed_s", "cusparse_bsr.gather_eff",
            "cusparse_bsr.cycles_per_block", "cusparse_bsr.cycles_per_value", "cusparse_bsr.fixed_s", "cusparse_bsr.gather_eff_fp32", "cusparse_bsr.cycles_per_block_fp32", "cusparse_bsr.cycles_per_value_fp32", "cusparse_bsr.fixed_s_fp32", "bsr_tc.tc_eff", "bsr_tc.cycles_per_block", "bsr_tc.latency_per_block", "bsr_tc.fixed_s",
            "act_gemv.atomics_per_s", "act_gemv.atomic_serial_s", "launch_s", "mem_latency_s", "l2_dirty_frac",
            "epilogue_bytes_per_clk", "flash_attention.tc_eff", "flash_attention.fa2_tc_eff", "flash_attention.fixed_s",
            "grouped_gemm.tc_eff")


@dataclass
class Fitted:
    value: float
    source: str
    rms_log: float = math.nan
    n: int = 0


def _select(cases: list[Case], selector: str) -> list[Case]:
    kern, _, sub = selector.partition(":")
    out = [c for c in cases if c.kernel == kern]
    if sub == "half":
        out = [c for c in out if c.op.dtype in ("fp16", "bf16")]
    elif sub == "fp32":
        out = [c for c in out if c.op.dtype == "fp32"]
    elif sub == "searched":
        out = [c for c in out if c.variant == "cslt_sparse_mm_searched_cudagraph"]
    elif sub in ("fa2", "cudnn"):
        out = [c for c in out if c.variant == ("sdpa_flash" if sub == "fa2" else "sdpa_cudnn")]
    elif sub == "default":
        out = [c for c in out if c.variant != "cslt_sparse_mm_searched_cudagraph"]
    return out


def _with(spec: GPUSpec, eff: dict[str, float]) -> GPUSpec:
    return spec.model_copy(update={"efficiency": {**spec.efficiency, **eff}})


def _lo(key: str) -> float:
    """Lower bound for the log-scaled fit (a zero lower bound becomes 1e-4 of the upper one)."""
    p = model.PARAMS[key]
    return p.lo if p.lo > 0 else p.hi * 1e-4


def fit_family(spec: GPUSpec, cases: list[Case], keys: tuple[str, ...]) -> tuple[dict[str, float], float]:
    """Least squares on log time over log-scaled `keys`; returns (values, RMS log error)."""
    x0 = np.log([min(max(model.param(spec, k), _lo(k)), model.PARAMS[k].hi) for k in keys])
    lo = np.log([_lo(k) for k in keys])
    hi = np.log([model.PARAMS[k].hi for k in keys])
    meas = np.log([c.measured_s for c in cases])

    def resid(x: np.ndarray) -> np.ndarray:
        s = _with(spec, dict(zip(keys, np.exp(x).tolist(), strict=True)))
        return np.log([predict_case(c, s) for c in cases]) - meas

    best = None
    for start in (x0, (lo + hi) / 2):  # two starts: the piecewise model has kinks
        r = least_squares(resid, np.clip(start, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), diff_step=1e-3,
                          x_scale=1.0, max_nfev=200)
        if best is None or r.cost < best.cost:
            best = r
    vals = dict(zip(keys, np.exp(best.x).tolist(), strict=True))
    return vals, float(np.sqrt(np.mean(best.fun ** 2)))


def _ceiling(ds: Dataset, kernel: str, metric: str | None = None) -> dict | None:
    for row in ds.ceilings:
        if row.get("kernel") == kernel and (metric is None or row.get("metric") == metric):
            return row
    return None


def calibrate(data: str | Path | None = None, hardware: str = "h200", write: bool = True,
              transfer: tuple[str, ...] = ("h100-sxm",), log=print) -> dict[str, Fitted]:
    """Fit `hardware`'s efficiencies on the fit half of `data`; write its YAML (and transfers)."""
    spec = hwmodels.load(hardware)
    if not isinstance(spec, GPUSpec):
        raise ValueError(f"hardware: {hardware!r} is a {spec.hw_class} spec; allowed: a GPU spec")
    data = Path(data) if data else DATA_DIR / hardware
    ds = load(data)
    # the fit half of every campaign but the unseen checks and the probes held from the fit
    # (validate.UNSEEN_CAMPAIGNS, validate.HELD_FROM_FIT)
    fit = [c for c in ds.cases if c.half == "fit" and not any(u in c.source for u in UNSEEN_CAMPAIGNS + HELD_FROM_FIT)]
    if not fit:
        raise ValueError(f"data: no usable fit-half rows in {data}")
    files = ", ".join(sorted({c.source for c in fit}))
    today = _dt.date.today().isoformat()
    out: dict[str, Fitted] = {}
    cur = spec
    # 1. machine ceilings, measured directly
    empty = _ceiling(ds, "empty_kernel_torch", "device_time_events_hostlead")
    if empty and empty.get("value"):
        out["launch_s"] = Fitted(float(empty["value"]), f"{empty['_source']}: ceiling empty_kernel_torch "
                                 f"(torch.cuda._sleep(0)) device time behind a host lead, median of "
                                 f"{empty.get('n_timed', 20)}; {today}")
    copy = _ceiling(ds, "d2d_copy")
    if copy and copy.get("value"):
        eff = float(copy["value"]) / spec.hbm_bw_gbps
        out["hbm_eff"] = Fitted(min(eff, 1.0), f"{copy['_source']}: ceiling d2d_copy {float(copy['value']):.0f} "
                                f"GB/s (read + written) / datasheet {spec.hbm_bw_gbps:.0f} GB/s; {today}")
    cur = _with(cur, {k: v.value for k, v in out.items()})
    # 2.-5. kernel families, in order (later families see earlier fits)
    for fam, (selector, keys) in FAMILIES.items():
        sel = _select(fit, selector)
        if len(sel) < 2 * len(keys):
            log(f"  {fam}: {len(sel)} fit rows, not enough to fit {', '.join(keys)}: left at prior/current")
            continue
        vals, rms = fit_family(cur, sel, keys)
        cur = _with(cur, vals)
        mape = float(np.mean([abs(predict_case(c, cur) / c.measured_s - 1) for c in sel]))
        for k, v in vals.items():
            out[k] = Fitted(v, f"fitted {today} on {files}: fit half (crc32('NxK') even), {len(sel)} {fam} rows, "
                               f"least squares on log time (RMS log error {rms:.3f}, MAPE {mape:.1%})", rms, len(sel))
        log(f"  {fam}: {', '.join(f'{k}={v:.4g}' for k, v in vals.items())} on {len(sel)} rows, MAPE {mape:.1%}")
    # 6. host time per eager call, per call path
    paths = sorted({(c.kernel, c.variant) for c in fit if c.host_s})
    for kern, var in paths:
        hs = [c.host_s for c in fit if (c.kernel, c.variant) == (kern, var) and c.host_s]
        gm = float(np.exp(np.mean(np.log(hs))))
        out[f"host_s.{kern}.{var}"] = Fitted(gm, f"{files}: geometric mean of host_call_s (perf_counter around one "
                                                f"eager call, no sync) over {len(hs)} fit-half rows; {today}",
                                             n=len(hs))
    if write:
        path = write_efficiency(hardware, out)
        log(f"  wrote {len(out)} parameters to {path}")
        for other in transfer:
            tr = {k: Fitted(v.value, f"transferred from {hardware} (same GH100 SM; not validated on {other}): "
                                     f"{v.source}") for k, v in out.items() if k in SM_LEVEL or k.startswith("host_s.")}
            # every achieved-HBM fraction (…hbm_eff, …hbm_frac), not a hand-kept list of them
            for key in [k for k in out if k.endswith(("hbm_eff", "hbm_frac"))]:
                tr[key] = Fitted(out[key].value, f"transferred from {hardware}: achieved fraction of datasheet "
                                 f"HBM bandwidth assumed equal for HBM3 (not measured on {other}); "
                                 f"{out[key].source}")
            p = write_efficiency(other, tr)
            log(f"  wrote {len(tr)} transferred parameters to {p}")
    return out


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', "'") + '"'


def write_efficiency(hardware: str, params: dict[str, Fitted]) -> Path:
    """Replace the spec file's `efficiency:` block (kept: entries not in `params`)."""
    path = SPEC_DIR / f"{hardware}.yaml"
    text = path.read_text()
    old = hwmodels.load_file(path)
    keep = {k: Fitted(v, old.sources.get(f"efficiency.{k}", "")) for k, v in old.efficiency.items() if k not in params}
    merged = {**keep, **params}
    block = ["efficiency:"]
    for k in sorted(merged):
        v = merged[k]
        block.append(f"  {k}: {{value: {v.value:.6g}, source: {_yaml_str(v.source)}}}")
    body = re.sub(r"(?ms)^efficiency:\n(?:[ \t]+.*\n?)*", "", text).rstrip("\n")
    path.write_text(body + "\n" + "\n".join(block) + "\n")
    hwmodels.spec._CACHE.clear()
    hwmodels.load_file(path)  # still a valid spec
    return path
