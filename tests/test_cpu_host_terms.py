"""The host-model terms of the sixth fit (validation/data/cpu-host/README.md), each against a
hand-computed expectation: L3 residency of a rotated working set, bitmap branch mispredicts, the
per-segment DRAM latency of the numba SpMM, OpenBLAS's M-remainder kernels and the stream rate
of a blocked GEMM's packing reads. Every term is off when its spec key is absent."""

from __future__ import annotations

import math

import pytest

import hwmodels
import hwmodels.cpu as cpu
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import Block, Unstructured

MiB = 2**20


def _spec(**eff: float):
    """host with only the given efficiency keys (no calibrated values in the way)."""
    return hwmodels.load("host").replace(residual_file="").replace(efficiency=dict(eff))


def _extra_dram(op, mp, spec) -> float:
    """DRAM seconds `spec`'s terms add over the bare host spec for one call."""
    return cpu.cost(op, mp, spec).breakdown_s["dram"] - cpu.cost(op, mp, _spec()).breakdown_s["dram"]


# --- L3 residency of a rotated working set -------------------------------------------------------


def test_l3_share_is_survival_probability():
    # 4 copies x 1 MiB touched per call = 4 MiB inserted between two uses of a copy; a 4 MiB cache
    # with random replacement keeps a line with probability exp(-4/4) = 0.3679
    spec = _spec(l3_keep_bytes=4 * MiB)
    mp = Mapping("cpu_csr", params={"threads": 1, "rotation_copies": 4})
    assert cpu.l3_resident_share(spec, mp, 1 * MiB) == pytest.approx(math.exp(-1.0), rel=1e-12)
    assert cpu.l3_resident_share(spec, mp, 0.0) == 0.0
    # no rotation given (a real caller), or no capacity in the spec: cold, the old behaviour
    assert cpu.l3_resident_share(spec, Mapping("cpu_csr", params={"threads": 1}), 1 * MiB) == 0.0
    assert cpu.l3_resident_share(_spec(), mp, 1 * MiB) == 0.0


def test_l3_share_lru_cliff():
    # l3_keep_hill = 3 (LRU-like, eighth fit): a rotation of F = C keeps exactly half, whatever h;
    # F = C / 2 keeps 1 / (1 + 1/8) = 8/9 and F = 2 C keeps 1/9 (random replacement: 0.61 and 0.14)
    spec = _spec(l3_keep_bytes=8 * MiB, l3_keep_hill=3.0)

    def share(copies: int) -> float:
        return cpu.l3_resident_share(spec, Mapping("cpu_csr", params={"threads": 1, "rotation_copies": copies}),
                                     1 * MiB)

    assert share(8) == pytest.approx(0.5, rel=1e-12)
    assert share(4) == pytest.approx(8 / 9, rel=1e-12)
    assert share(16) == pytest.approx(1 / 9, rel=1e-12)
    # steeper than random replacement on both sides of the cliff
    assert share(4) > math.exp(-0.5) and share(16) < math.exp(-2.0)
    # without l3_keep_hill: random replacement, as before
    exp_spec = _spec(l3_keep_bytes=8 * MiB)
    mp = Mapping("cpu_csr", params={"threads": 1, "rotation_copies": 4})
    assert cpu.l3_resident_share(exp_spec, mp, 1 * MiB) == pytest.approx(math.exp(-0.5), rel=1e-12)


def test_l3_resident_traffic_moves_at_l3_bandwidth():
    # dense GEMM 64 x 64 x 64 fp32: A, B 16 KiB each + C 16 KiB written once = 49152 bytes.
    # With 1 rotation copy and l3_keep = 49152 / ln 2 the share kept is exactly 1/2, so the
    # DRAM-side time is half the bytes at the DRAM rate and half at the L3 rate (probe numbers).
    op = Op.gemm(64, 64, 64, dtype="fp32")
    nbytes = 3 * 64 * 64 * 4
    spec = _spec(l3_keep_bytes=nbytes / math.log(2.0))
    cold = cpu.cost(op, Mapping("cpu_dense_gemm", params={"threads": 1}), spec)
    warm = cpu.cost(op, Mapping("cpu_dense_gemm", params={"threads": 1, "rotation_copies": 1}), spec)
    dram_bw = spec.dram_bw_gbps * 1e9
    l3_bw = spec.l3_bw_bytes_per_clk * spec.clock_hz
    assert cold.breakdown_s["dram"] == pytest.approx(nbytes / dram_bw, rel=1e-9)
    assert warm.breakdown_s["dram"] == pytest.approx(0.5 * nbytes / dram_bw + 0.5 * nbytes / l3_bw, rel=1e-9)


def test_other_work_evicts_in_proportion_to_the_time_between_uses():
    # 4 copies x 1 MiB, 8 MiB kept, LRU-like h = 3; other work inserts 1000 MiB/s. A call of 1 ms leaves
    # 4 ms between two uses of a copy: 4 MiB of its own + 4 MiB of others' = 8 MiB = C, half kept.
    # A call of 0 s: only its own 4 MiB, 8/9 kept (test_l3_share_lru_cliff).
    spec = _spec(l3_keep_bytes=8 * MiB, l3_keep_hill=3.0, l3_evict_bps=1000.0 * MiB)
    mp = Mapping("cpu_csr", params={"threads": 1, "rotation_copies": 4})
    assert cpu.l3_resident_share(spec, mp, 1 * MiB, 1e-3) == pytest.approx(0.5, rel=1e-12)
    assert cpu.l3_resident_share(spec, mp, 1 * MiB, 0.0) == pytest.approx(8 / 9, rel=1e-12)
    # 3 ms: 4 + 12 = 16 MiB = 2 C, 1/9 kept
    assert cpu.l3_resident_share(spec, mp, 1 * MiB, 3e-3) == pytest.approx(1 / 9, rel=1e-12)


def test_call_time_is_the_fixed_point_of_its_own_evictions():
    # dense GEMM 64 x 64 x 64 fp32 (49152 compulsory bytes), 32 copies. The modelled time t must satisfy
    # t = on-chip + DRAM(kept share at t) with the share kept 1 / (1 + (32 (B + R t) / C)^2): recompute
    # the right-hand side by hand from the returned breakdown.
    op = Op.gemm(64, 64, 64, dtype="fp32")
    nbytes = 3 * 64 * 64 * 4
    keep, rate = 2.0 * MiB, 5e9
    spec = _spec(l3_keep_bytes=keep, l3_keep_hill=2.0, l3_evict_bps=rate, mem_overlap=0.0)
    mp = Mapping("cpu_dense_gemm", params={"threads": 1, "rotation_copies": 32})
    c = cpu.cost(op, mp, spec)
    t = c.t_s
    share = 1.0 / (1.0 + (32 * (nbytes + rate * t) / keep) ** 2)
    dram_bw = spec.dram_bw_gbps * 1e9
    l3_bw = spec.l3_bw_bytes_per_clk * spec.clock_hz
    t_dram = (1 - share) * nbytes / dram_bw + share * nbytes / l3_bw
    assert c.breakdown_s["dram"] == pytest.approx(t_dram, rel=1e-5)
    on_chip = max(c.breakdown_s["core"], c.breakdown_s["panel"])
    assert t == pytest.approx(c.breakdown_s["call"] + on_chip + t_dram, rel=1e-5)
    # other work only ever evicts: the call is slower than without it, faster than fully cold
    still = cpu.cost(op, mp, _spec(l3_keep_bytes=keep, l3_keep_hill=2.0, mem_overlap=0.0)).t_s
    cold = cpu.cost(op, Mapping("cpu_dense_gemm", params={"threads": 1}), _spec(mem_overlap=0.0)).t_s
    assert still < t < cold


# --- bitmap: mispredicted bit tests ---------------------------------------------------------------


def _bitmap_miss_cycles(m: int, c_miss: float = 12.0) -> float:
    """Core cycles the mispredicts add to a bitmap SpMM of m pixels (one block), 8 x 64 at d = 0.5."""
    op = Op.gemm(m, 8, 64, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_bitmap", tile=(m, 8, 64), params={"threads": 1})
    base = cpu.cost(op, mp, _spec())
    miss = cpu.cost(op, mp, _spec(**{"cpu_bitmap.c_miss": c_miss}))
    return (miss.breakdown_s["core"] - base.breakdown_s["core"]) * base.cycles / base.t_s


def test_bitmap_mispredicts_about_four_per_byte_at_half_density():
    # d = 0.5: every byte is busy (1 - 2^-8) and each of its 8 bit tests is a coin flip, so a
    # predictor errs on half of them: ~4 mispredicts per byte, 12 cycles each. Half of them follow a
    # set bit, whose axpy is still executing during the refill: 16 pixels = one 512-bit vector,
    # 2 cycles (acc + X load on the one 512-bit load port), so 2 of the 12 cycles are hidden there:
    # 4 * (1 - 0.5 * 2/12) = 3.667 exposed per byte. 8 rows x 64 columns = 8 bytes per row
    assert _bitmap_miss_cycles(16) == pytest.approx(8 * 8 * 4 * (1 - 0.5 * 2 / 12) * 12, rel=0.01)


def test_a_set_bits_axpy_hides_the_next_mispredict():
    # 4096 pixels in one block: a set bit's axpy (256 vectors) outlasts any refill, so the
    # mispredicts that follow a set bit (half of them at d = 0.5) cost nothing: ~2 exposed per byte.
    # Exactly: busy = 1 - 2^-8, q = 0.5 / busy; bit tests 8 busy min(q, 1 - q) (1 - q), the
    # zero-byte test (1 - busy)(1 - 0.5)
    busy = 1 - 2.0**-8
    q = 0.5 / busy
    per_byte = 8 * busy * min(q, 1 - q) * (1 - q) + (1 - busy) * 0.5
    assert per_byte == pytest.approx(2.0, rel=0.02)
    assert _bitmap_miss_cycles(4096) == pytest.approx(8 * 8 * per_byte * 12, rel=1e-6)


def test_bitmap_mispredicts_vanish_for_an_empty_or_full_bitmap():
    mp = Mapping("cpu_bitmap", tile=(16, 8, 64), params={"threads": 1})
    for d in (1e-9, 1.0):  # no set bit / every bit set: every branch goes one way
        op = Op.gemm(16, 8, 64, dtype="fp32", weight=Unstructured(d))
        a = cpu.cost(op, mp, _spec()).t_s
        b = cpu.cost(op, mp, _spec(**{"cpu_bitmap.c_miss": 12.0})).t_s
        assert b == pytest.approx(a, rel=1e-6)


# --- numba SpMM: exposed latency per first-touched X segment ---------------------------------------


def test_x_segments_one_block_and_block_columns():
    # one pixel block (M = 49 <= mb): CSR at d = 0.5 over N = 64 rows touches every one of the
    # K = 128 X rows (untouched with probability 0.5^64): 128 segments x 100 ns = 12.8 us
    op = Op.gemm(49, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_csr", tile=(49, 64, 128), params={"threads": 1})
    d = cpu.cost(op, mp, _spec(x_seg_s=1e-7)).breakdown_s["dram"] - cpu.cost(op, mp, _spec()).breakdown_s["dram"]
    assert d == pytest.approx(128 * 1e-7, rel=1e-9)
    # 1x4 blocks at block density 0.5, one pixel block: the 4 rows of a block column are
    # contiguous in X, so 32 segments (a block column is untouched with probability 0.5^64);
    # 4x1 blocks: 128 single-row segments, each untouched by all 16 block rows w.p. 0.5^16
    for blk, segs in (((1, 4), 32 * (1 - 0.5**64)), ((4, 1), 128 * (1 - 0.5**16))):
        opb = Op.gemm(49, 64, 128, dtype="fp32", weight=Block(*blk, density=0.5))
        mpb = Mapping("cpu_bsr", tile=(49, 64, 128), params={"threads": 1})
        d = cpu.cost(opb, mpb, _spec(x_seg_s=1e-7)).breakdown_s["dram"] \
            - cpu.cost(opb, mpb, _spec()).breakdown_s["dram"]
        assert d == pytest.approx(segs * 1e-7, rel=1e-6)


def test_x_segments_per_pixel_block():
    # M = 100 in blocks of 50: each of the 128 touched X rows is read as 2 separate segments
    op = Op.gemm(100, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_csr", tile=(50, 64, 128), params={"threads": 1})
    d = cpu.cost(op, mp, _spec(x_seg_s=1e-7)).breakdown_s["dram"] - cpu.cost(op, mp, _spec()).breakdown_s["dram"]
    assert d == pytest.approx(2 * 128 * 1e-7, rel=1e-9)


def test_short_segments_share_their_latency_and_split_outputs_count():
    # x_seg_lines = 8: a segment of 4 cache lines exposes half a latency.
    # One block of 49 pixels: 128 X segments of 196 B = 4 lines -> 64 latencies = 6.4 us; Y is one
    # contiguous stream (no Y segments).
    on = _spec(x_seg_s=1e-7, x_seg_lines=8.0)
    assert _csr_segments(49, 49, on) == pytest.approx(64 * 1e-7, rel=1e-9)
    # M = 100 in 2 blocks of 50 pixels (200 B = 4 lines): 2 x 128 X segments and 64 rows x 2 blocks
    # of Y segments, each half exposed: (256 + 128) / 2 = 192 latencies = 19.2 us
    assert _csr_segments(100, 50, on) == pytest.approx(192 * 1e-7, rel=1e-9)


def _csr_segments(m: int, mb: int, on) -> float:
    """Extra DRAM seconds of `on`'s segment terms for CSR d = 0.5, N = 64, K = 128, M pixels in
    blocks of mb, one thread."""
    op = Op.gemm(m, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    return _extra_dram(op, Mapping("cpu_csr", tile=(mb, 64, 128), params={"threads": 1}), on)


def test_later_pixel_blocks_continue_their_segments():
    # x_seg_first_block_only (ninth fit): block b + 1's segment of an X row (and of a Y row) starts where
    # block b's ended, so only the first block's segments expose the latency. M = 100 in 2 blocks of 50
    # pixels (200 B = 4 lines, x_seg_lines = 8: half a latency each): 128 X segments and 64 Y segments
    # of the first block, (128 + 64) / 2 = 96 latencies = 9.6 us (every block: 192, the test above)
    on = _spec(x_seg_s=1e-7, x_seg_lines=8.0, x_seg_first_block_only=1.0)
    assert _csr_segments(100, 50, on) == pytest.approx(96 * 1e-7, rel=1e-9)
    # splitting the same pixels into more blocks no longer adds latencies: 4 blocks of 25 pixels
    # (100 B = 2 lines: a quarter latency each) -> (128 + 64) / 4 = 48 latencies
    assert _csr_segments(100, 25, on) == pytest.approx(48 * 1e-7, rel=1e-9)
    # one pixel block: unchanged (Y is one stream; 128 X segments of 4 lines = 64 latencies)
    assert _csr_segments(49, 49, on) == pytest.approx(64 * 1e-7, rel=1e-9)


def test_split_pixels_pay_a_new_stream_per_x_segment():
    # numba.c_xseg (ninth fit): with the pixels split into blocks, every X segment an axpy reads opens
    # a new L2 stream. CSR, M = 100 in 2 blocks, N = 64, K = 128, d = 0.5: 4096 nonzeros x 2 blocks x
    # 10 cycles = 81,920 cycles of core time; BSR 1x4 at block density 0.5: 64 rows x 32 block columns
    # x 0.5 = 1024 blocks, each reading 4 X rows at the constant stride M, which the stride prefetcher
    # follows as one stream: 1024 x 2 blocks x 10 cycles = 20,480 cycles
    spec = hwmodels.load("host").replace(residual_file="")
    base = _spec()
    on = _spec(**{"numba.c_xseg": 10.0})
    op = Op.gemm(100, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_csr", tile=(50, 64, 128), params={"threads": 1})
    dc = cpu.cost(op, mp, on).breakdown_s["core"] - cpu.cost(op, mp, base).breakdown_s["core"]
    assert dc == pytest.approx(4096 * 2 * 10.0 / spec.clock_hz, rel=1e-9)
    opb = Op.gemm(100, 64, 128, dtype="fp32", weight=Block(1, 4, density=0.5))
    mpb = Mapping("cpu_bsr", tile=(50, 64, 128), params={"threads": 1})
    db = cpu.cost(opb, mpb, on).breakdown_s["core"] - cpu.cost(opb, mpb, base).breakdown_s["core"]
    assert db == pytest.approx(1024 * 2 * 10.0 / spec.clock_hz, rel=1e-9)
    # one pixel block: the X panel's rows lie back to back (one ascending stream), no cost
    mp1 = Mapping("cpu_csr", tile=(100, 64, 128), params={"threads": 1})
    assert cpu.cost(op, mp1, on).t_s == pytest.approx(cpu.cost(op, mp1, base).t_s, rel=1e-12)
    # absent key: off (default_params gives 0)
    assert cpu.default_params(spec, "numba")["c_xseg"] == 0.0


# --- dense GEMM: OpenBLAS M-remainder kernels, packing streams -------------------------------------


def test_binary_pieces():
    assert cpu._binary_pieces(0) == []
    assert cpu._binary_pieces(1) == [1]
    assert cpu._binary_pieces(15) == [1, 2, 4, 8]
    assert cpu._binary_pieces(12) == [4, 8]


def test_m_remainder_runs_on_narrow_kernels():
    # M = 49 = 3 x 16 + 1. Padded: 4 tiles of 16 rows. With the remainder on a 1-row kernel that
    # costs 1 + 4 rows of a tile: 48 + 5 = 53 row-equivalents, so FMA cycles are 53/64 of padded.
    # N = 4 (one column of tiles), K = 64: padded 64 * 4 * 64 / 16 = 1024 cycles, narrow 848.
    ideal = dict(dram_bw_gbps=1e12)
    eff = {"gemm.eff": 1.0, "gemm.c_pack": 0.0, "gemm.t_call_s": 0.0, "gemm.epilogue": 0.0}
    op = Op.gemm(49, 4, 64, dtype="fp32")
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})
    padded = cpu.cost(op, mp, hwmodels.load("host").replace(residual_file="").replace(efficiency=eff, **ideal))
    narrow = cpu.cost(op, mp, hwmodels.load("host").replace(residual_file="").replace(efficiency={**eff, "gemm.m_tail_rows": 4.0}, **ideal))
    assert padded.cycles == pytest.approx(64 * 4 * 64 / 16, rel=1e-6)
    assert narrow.cycles == pytest.approx(53 * 4 * 64 / 16, rel=1e-6)
    # a multiple of 16 has no remainder: unchanged
    op48 = Op.gemm(48, 4, 64, dtype="fp32")
    a = cpu.cost(op48, mp, hwmodels.load("host").replace(residual_file="").replace(efficiency=eff, **ideal)).cycles
    b = cpu.cost(op48, mp, hwmodels.load("host").replace(residual_file="").replace(efficiency={**eff, "gemm.m_tail_rows": 4.0}, **ideal)).cycles
    assert a == pytest.approx(b, rel=1e-12) == pytest.approx(48 * 4 * 64 / 16, rel=1e-6)


def test_blocked_gemm_reads_at_the_stream_rate_when_calibrated():
    # 64 x 64 x 64 fp32: 49152 compulsory bytes. With stream_eff = 0.5 and dram_eff = 0.25 a
    # blocked GEMM (packing = sequential streams) moves them at 0.5 x the probe bandwidth.
    op = Op.gemm(64, 64, 64, dtype="fp32")
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})
    spec = _spec(stream_eff=0.5, dram_eff=0.25)
    assert cpu.cost(op, mp, spec).breakdown_s["dram"] == pytest.approx(
        49152 / (0.5 * spec.dram_bw_gbps * 1e9), rel=1e-9)
    # without stream_eff the old rate (dram_eff) applies
    spec = _spec(dram_eff=0.25)
    assert cpu.cost(op, mp, spec).breakdown_s["dram"] == pytest.approx(
        49152 / (0.25 * spec.dram_bw_gbps * 1e9), rel=1e-9)


@pytest.mark.parametrize("name", ["snapdragon-835", "cortex-a76", "avx512-server", "wasm-simd128-arm"])
def test_new_terms_are_off_for_other_specs(name):
    # a rotation count in the mapping changes nothing where the spec has no l3_keep_bytes
    spec = hwmodels.load(name)
    op = Op.gemm(196, 64, 192, dtype="fp32")
    for kernel in ("cpu_dense_gemm",):
        a = cpu.cost(op, Mapping(kernel, params={"threads": 1}), spec).t_s
        b = cpu.cost(op, Mapping(kernel, params={"threads": 1, "rotation_copies": 32}), spec).t_s
        assert a == b


# --- seventh fit: branch predictor learning a repeated bitmap scan ---------------------------------


def test_branch_learned_share():
    # S = C hard outcomes per scan: the hill 1 / (1 + 1^h) keeps half of them, whatever h
    spec = _spec(**{"cpu_bitmap.bp_keep": 1000.0})
    rep = Mapping("cpu_bitmap", params={"threads": 1, "rotation_copies": 8})
    once = Mapping("cpu_bitmap", params={"threads": 1})
    assert cpu.branch_learned(spec, rep, 1000.0, 1) == pytest.approx(0.5, rel=1e-12)
    # one scan of a call that is not repeated has nothing to learn from
    assert cpu.branch_learned(spec, once, 1000.0, 1) == 0.0
    # 4 pixel blocks scan the same row bitmaps: blocks 2-4 (3/4 of the scans) may hit learned entries
    assert cpu.branch_learned(spec, once, 1000.0, 4) == pytest.approx(0.75 * 0.5, rel=1e-12)
    # twice the capacity: 1 / (1 + 2^BRANCH_HILL)
    assert cpu.branch_learned(spec, rep, 2000.0, 1) == pytest.approx(1 / (1 + 2.0 ** cpu.BRANCH_HILL), rel=1e-12)
    # no capacity in the spec: nothing learned
    assert cpu.branch_learned(_spec(), rep, 1000.0, 1) == 0.0
    # a rotation whose copies carry different masks (measure --cold) repeats nothing between calls:
    # only the pixel blocks after the first within a call
    cold = Mapping("cpu_bitmap", params={"threads": 1, "rotation_copies": 300, "distinct_masks": True})
    assert cpu.branch_learned(spec, cold, 1000.0, 1) == 0.0
    assert cpu.branch_learned(spec, cold, 1000.0, 4) == pytest.approx(0.75 * 0.5, rel=1e-12)


def test_cold_harness_rotates_over_twice_the_llc_with_distinct_masks():
    """measure --cold: a small layer rotates over copies worth >= 2x the LLC (past the default cap of
    32), each copy a different mask of the same density; the default keeps the cap and one mask."""
    from simsparse import measure_cpu as mc

    pt = mc.Point("cpu_csr", 49, 64, 96, {"pattern": "unstructured", "density": 0.1}, "t")
    _, warm_copies, warm = mc.build(pt)
    _, cold_copies, cold = mc.build(pt, cold=True)
    set_bytes = 96 * 49 * 4 + 64 * 49 * 4 + cold["weight_bytes"]
    assert warm_copies == mc.ROTATION_CAP and not warm.get("distinct_masks")
    assert cold_copies * set_bytes >= 2 * mc._llc_bytes() and cold_copies > mc.ROTATION_CAP
    assert cold["distinct_masks"] and cold["rel_err"] < 1e-4


def test_bitmap_mispredicts_halved_at_capacity():
    # d = 0.5, 8 rows x 64 columns, one pixel block: ~4 mispredicts per byte x 64 bytes = ~256 hard
    # outcomes per scan (exactly 64 * (2^-8 + (1 - 2^-8) * 8 * 0.5 / (1 - 2^-8)) = 64 * 4.0039).
    # With bp_keep equal to that and a repeated call, half of the mispredict cycles go away.
    op = Op.gemm(16, 8, 64, dtype="fp32", weight=Unstructured(0.5))
    busy = 1 - 0.5 ** 8
    s = 64 * (min(busy, 1 - busy) + busy * 8 * min(0.5 / busy, 1 - 0.5 / busy))
    rep = Mapping("cpu_bitmap", tile=(16, 8, 64), params={"threads": 1, "rotation_copies": 4})
    base = cpu.cost(op, rep, _spec()).breakdown_s["core"]
    miss = cpu.cost(op, rep, _spec(**{"cpu_bitmap.c_miss": 12.0})).breakdown_s["core"]
    kept = cpu.cost(op, rep, _spec(**{"cpu_bitmap.c_miss": 12.0, "cpu_bitmap.bp_keep": s})).breakdown_s["core"]
    assert kept - base == pytest.approx(0.5 * (miss - base), rel=1e-9)


# --- seventh fit: BLAS GEMV reads W in place at its own stream rate --------------------------------


def test_gemv_packs_nothing_and_streams_at_its_rate():
    # 1 x 4096 x 4096 fp32 GEMV: 16 MiB of W + 16 KiB x + 16 KiB y (Y counted once) = 16809984 bytes.
    op = Op.gemm(1, 4096, 4096, dtype="fp32")
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})
    packed = cpu.cost(op, mp, _spec(**{"gemm.c_pack": 10.0, "gemm.gemv_packs": 1.0}))
    inplace = cpu.cost(op, mp, _spec(**{"gemm.c_pack": 10.0}))  # the default: no GEMV packs per call
    # packing (4096 + 4096 * 4096) / 16 lanes x 10 cycles is gone; the FMAs remain (4096^2 / 16 / 2)
    clock = packed.cycles / packed.t_s
    lost = (packed.breakdown_s["core"] - inplace.breakdown_s["core"]) * clock
    assert lost == pytest.approx((4096 + 4096 * 4096) / 16 * 10.0, rel=1e-9)
    # a blocked GEMM still packs
    op2 = Op.gemm(64, 64, 64, dtype="fp32")
    assert cpu.cost(op2, mp, _spec(**{"gemm.c_pack": 10.0, "gemm.gemv_packs": 0.0})).t_s == \
        cpu.cost(op2, mp, _spec(**{"gemm.c_pack": 10.0})).t_s
    # memory: the GEMV moves its bytes at gemv_stream_eff x the probe bandwidth, not stream_eff
    spec = _spec(stream_eff=0.5, gemv_stream_eff=0.75)
    nbytes = 4096 * 4096 * 4 + 4096 * 4 + 4096 * 4
    assert cpu.cost(op, mp, spec).breakdown_s["dram"] == pytest.approx(
        nbytes / (0.75 * spec.dram_bw_gbps * 1e9), rel=1e-9)
    assert cpu.cost(op, mp, _spec(stream_eff=0.5)).breakdown_s["dram"] == pytest.approx(
        nbytes / (0.5 * spec.dram_bw_gbps * 1e9), rel=1e-9)


def test_gemv_splits_its_rows_over_the_threads():
    # a GEMV is as parallel as a GEMM of two rows: its core cycles shrink with threads, and one row
    # never costs more than two (before, a GEMV ran on one thread whatever the mapping said)
    op1, op2 = Op.gemm(1, 4096, 4096, dtype="fp32"), Op.gemm(2, 4096, 4096, dtype="fp32")
    spec = _spec()
    one = cpu.cost(op1, Mapping("cpu_dense_gemm", params={"threads": 1}), spec)
    two = cpu.cost(op1, Mapping("cpu_dense_gemm", params={"threads": 2}), spec)  # host: 2 cores
    assert two.breakdown_s["core"] == pytest.approx(one.breakdown_s["core"] / 2, rel=1e-9)
    assert two.t_s <= cpu.cost(op2, Mapping("cpu_dense_gemm", params={"threads": 2}), spec).t_s
