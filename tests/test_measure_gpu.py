"""The GPU measurement harness: schema of the checked-in rows (no GPU needed), the seeded masks
(torch on any device) and a quick smoke campaign (skipped where no CUDA GPU exists)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from simsparse import measure_gpu as mg
from simsparse.validate import read_lines

DATA_ROOT = Path(__file__).resolve().parents[1] / "validation" / "data"


def _gpu_campaign_files() -> list[Path]:
    """JSON-lines files written by simsparse.measure_gpu (recognised by their first row)."""
    out = []
    for p in sorted([*DATA_ROOT.glob("*/*.jsonl"), *DATA_ROOT.glob("*/*.jsonl.gz")]):
        lines = read_lines(p)
        first = json.loads(lines[0] if lines else "{}")
        if first.get("schema") == mg.SCHEMA_VERSION and "sm_count" in first:
            out.append(p)
    return out


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in read_lines(path) if line.strip()]


def check_rows(rows: list[dict], name: str = "rows") -> None:
    """Assert the measure_gpu schema: required fields, timing sanity, correctness flags, and a
    timed cuBLAS row of the same (m, n, k, dtype) for every timed sparse row."""
    assert rows, f"{name}: no rows"
    dense = set()
    sparse = []
    for i, r in enumerate(rows):
        where = f"{name} row {i} ({r.get('kernel')}/{r.get('variant')})"
        if r["kind"] == "ceiling":
            missing = [f for f in mg.CEILING_FIELDS if f not in r]
            assert not missing, f"{where}: missing {missing}"
            assert r["value"] is None or r["value"] > 0, where
            continue
        assert r["kind"] in ("gemm", "gemv", "attention", "grouped"), where
        if r["kind"] == "attention":
            assert all(f in r for f in ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim", "causal")), where
        missing = [f for f in mg.REQUIRED_FIELDS if f not in r]
        assert not missing, f"{where}: missing {missing}"
        assert r["dtype"] in mg.TOLERANCE, where
        assert isinstance(r["ok"], bool), where
        if r["t_s"] is None:  # error or skipped: says why, never ok
            assert r.get("error") or r.get("skipped"), f"{where}: untimed row without a reason"
            assert r["ok"] is False, where
            continue
        assert r["n_timed"] >= 20, where
        assert 0 < r["t_min_s"] <= r["t_s"] <= r["t_max_s"], where
        assert r["rel_err"] is not None and r["rel_err"] >= 0, where
        assert r["ok"] == (r["rel_err"] <= mg.TOLERANCE[r["dtype"]] and r.get("finite", True)), where
        if r["kernel"] == "cublas":
            dense.add((r["m"], r["n"], r["k"], r["dtype"]))
        elif r["pattern"] != "dense":
            sparse.append((where, (r["m"], r["n"], r["k"], r["dtype"])))
    unmatched = [w for w, key in sparse if key not in dense]
    assert not unmatched, f"{len(unmatched)} sparse rows without a cuBLAS row, e.g. {unmatched[:3]}"


@pytest.mark.skipif(not _gpu_campaign_files(), reason="no measure_gpu data checked in")
@pytest.mark.parametrize("path", _gpu_campaign_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_checked_in_rows_follow_the_schema(path):
    rows = _read(path)
    check_rows(rows, path.name)
    # one campaign per file, measured on one device
    assert len({r["campaign"] for r in rows}) == 1
    assert len({(r["device"], r["sm_count"], r["l2_bytes"]) for r in rows}) == 1
    # every timed row's kernel call is correct (a fast wrong kernel is not a data point)
    bad = [r for r in rows if r["kind"] != "ceiling" and r["t_s"] is not None and not r["ok"]]
    assert not bad


@pytest.mark.skipif(not _gpu_campaign_files(), reason="no measure_gpu data checked in")
def test_checked_in_campaigns_cover_dense_and_2to4_everywhere():
    for path in _gpu_campaign_files():
        rows = [r for r in _read(path) if r["kind"] in ("gemm", "gemv") and r["t_s"] is not None]
        if not rows:  # an attention-only campaign
            continue
        by_kernel = defaultdict(set)
        for r in rows:
            by_kernel[(r["kernel"], r["dtype"])].add((r["m"], r["n"], r["k"]))
        # every sparse shape has its dense comparator in the same file (a speed-up is only
        # measured within one run)
        for (kernel, dt), shapes in by_kernel.items():
            if kernel != "cublas":
                assert shapes <= by_kernel[("cublas", dt)], (path.name, kernel, dt)
        if not any(k == "cusparselt" for k, _ in by_kernel):  # a campaign without the 2:4 phase
            continue
        for dt in ("fp16", "bf16"):
            assert len(by_kernel[("cusparselt", dt)]) >= 100, (path.name, dt)


def test_check_rows_rejects_an_unmatched_sparse_row():
    base = {f: None for f in mg.REQUIRED_FIELDS}
    row = {**base, "kind": "gemm", "kernel": "cusparselt", "variant": "x", "dtype": "fp16",
           "m": 16, "n": 64, "k": 64, "pattern": "2:4", "t_s": 1e-5, "t_min_s": 1e-5,
           "t_max_s": 2e-5, "n_timed": 20, "rel_err": 1e-3, "ok": True}
    with pytest.raises(AssertionError, match="without a cuBLAS row"):
        check_rows([row])
    dense = {**row, "kernel": "cublas", "pattern": "dense"}
    check_rows([row, dense])


# ----------------------------------------------------------------------------------------------
# masks and helpers (torch on the CPU is enough)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def kg():
    torch = pytest.importorskip("torch")
    from simsparse.kernels import gpu

    return gpu, torch


def test_2to4_mask_keeps_the_two_largest_of_every_group(kg):
    gpu, torch = kg
    w = gpu.randn((32, 64), torch.float32, seed=1, device="cpu")
    mask = gpu.mask_2to4(w)
    groups = mask.reshape(32, 16, 4)
    assert bool((groups.sum(-1) == 2).all())
    kept = (w.abs() * mask).reshape(32, 16, 4)
    dropped = (w.abs() * ~mask).reshape(32, 16, 4)
    assert bool((kept.max(-1).values >= dropped.max(-1).values).all())
    assert bool((kept.sum(-1) - kept.max(-1).values >= dropped.max(-1).values).all())


def test_block_mask_density_and_alignment(kg):
    gpu, torch = kg
    mask = gpu.mask_block((64, 128), 0.25, 16, seed=3, device="cpu")
    blocks = mask.reshape(4, 16, 8, 16).permute(0, 2, 1, 3).reshape(32, 256)
    full = blocks.all(-1)
    empty = ~blocks.any(-1)
    assert bool((full | empty).all()), "blocks are all-or-nothing"
    assert int(full.sum()) == round(0.25 * 32)
    again = gpu.mask_block((64, 128), 0.25, 16, seed=3, device="cpu")
    assert torch.equal(mask, again), "seeded masks are reproducible"


def test_sparse_activation_has_exact_nnz(kg):
    gpu, torch = kg
    x, idx = gpu.sparse_activation(1000, 0.25, torch.float32, seed=5, device="cpu")
    assert idx.numel() == 250 and int((x != 0).sum()) == 250
    assert torch.equal(torch.nonzero(x).flatten().to(torch.int32), idx)


def test_act_gemv_grid_covers_all_rows_and_columns(kg):
    gpu, _ = kg
    for n, nnz in [(768, 77), (4096, 1100), (28672, 8192), (64, 1)]:
        (gx, gy), chunk = gpu.act_gemv_grid(n, nnz)
        assert gx * gpu.ACT_GEMV_THREADS * 8 >= n
        assert gy * chunk >= nnz and (gy - 1) * chunk < nnz


# ----------------------------------------------------------------------------------------------
# on a GPU: a quick campaign through the real harness
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.slow
def test_quick_campaign_on_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    out = tmp_path / "quick.jsonl"
    assert mg.main(["--out", str(out), "--quick", "--phases", "ceilings,dense24,act"]) == 0
    rows = _read(out)
    check_rows(rows, out.name)
    kernels = {r["kernel"] for r in rows if r["kind"] != "ceiling" and r["ok"]}
    assert {"cublas", "cusparselt", "act_gemv"} <= kernels


def test_attention_check_catches_a_wrong_mask():
    """The attention correctness check: torch's own SDPA output passes, the output of the other
    mask (causal vs not) fails by far (CPU, fp32)."""
    torch = pytest.importorskip("torch")
    from simsparse.kernels import gpu as kg

    for causal in (False, True):
        q = torch.randn(1, 4, 48, 32, generator=torch.Generator().manual_seed(1))
        k, v = (torch.randn(1, 2, 48, 32, generator=torch.Generator().manual_seed(s)) for s in (2, 3))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        assert kg.attention_error(out, q, k, v, causal)[0] < 1e-5
        assert kg.attention_error(out, q, k, v, not causal)[0] > 0.1
