"""CPU cost model from first principles: hand-counted cycles, bounds, monotonicity, mappings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwmodels
import hwmodels.cpu as cpu
import mappers
from mappers.check import check_mapping
from mappers.cpu import REMAINDER_MIN, numba_block
from simsparse.core.mapping import Mapping
from simsparse.core.ops import AttnGeom, ConvGeom, Op
from simsparse.core.sparsity import NM, Activation, Block, Unstructured

FAST = settings(max_examples=40, deadline=None)
CPU_SPECS = ["host", "snapdragon-835", "snapdragon-855", "cortex-a76", "wasm-simd128-arm",
             "wasm-simd128-x86", "avx512-server"]
SPARSE_KERNELS = ["xnn_spmm", "cpu_csr", "cpu_bitmap"]


def _ideal(spec_name: str = "host", **eff: float):
    """A spec whose memory is infinitely fast and whose GEMM runs at the FMA rate, no per-tile epilogue
    (the analytic model alone: no learned correction)."""
    s = hwmodels.load(spec_name)
    return s.replace(dram_bw_gbps=1e12, residual_file="", efficiency={"gemm.eff": 1.0, "gemm.c_pack": 0.0, "gemm.t_call_s": 0.0,
                                                    "gemm.epilogue": 0.0, **eff})


@pytest.mark.parametrize("name", CPU_SPECS)
def test_specs_load_with_sources(name):
    s = hwmodels.load(name)
    assert s.hw_class == "cpu" and s.peak_flops("fp32") > 0
    for field in ("cores", "clock_hz", "simd_bits", "fma_units_per_core", "l1d_bytes", "l2_bytes"):
        assert field in s.sources, f"{name}: {field} has no source"


def test_dense_gemm_hand_counted_cycles():
    # AVX-512 fp32: 16 lanes, one 512-bit FMA per cycle; tile 16 x 4 divides 64 x 32 exactly:
    # 64*32*128 multiply-adds / (16 lanes * 1 FMA/cycle) = 16384 cycles
    spec = _ideal("host")
    op = Op.gemm(64, 32, 128, dtype="fp32")
    c = cpu.cost(op, Mapping("cpu_dense_gemm", params={"threads": 1}), spec)
    assert c.cycles == pytest.approx(64 * 32 * 128 / 16, rel=1e-9)
    assert c.t_s == pytest.approx(16384 / spec.clock_hz, rel=1e-9)
    assert c.bound == "compute"


def test_neon_gemm_hand_counted_and_tile_quantisation():
    # NEON fp32: 4 lanes; A76 two FMA pipes -> 8 FMA lanes / cycle; tile 6 x 8
    spec = _ideal("cortex-a76")
    op = Op.gemm(12, 16, 64, dtype="fp32")  # 2 x 2 whole tiles
    c = cpu.cost(op, Mapping("cpu_dense_gemm"), spec)
    assert c.cycles == pytest.approx(12 * 16 * 64 / 8)
    ragged = cpu.cost(Op.gemm(13, 16, 64, dtype="fp32"), Mapping("cpu_dense_gemm"), spec)
    assert ragged.cycles == pytest.approx(18 * 16 * 64 / 8)  # the 13th row costs a whole 6-row tile


def test_peak_and_wasm_have_no_fused_fma():
    a76, wasm = hwmodels.load("cortex-a76"), hwmodels.load("wasm-simd128-arm")
    assert a76.peak_flops("fp32") == pytest.approx(2 * 4 * 2 * 2.84e9)
    # same core, separate mul + add (2 pipes -> 1 multiply-add / cycle) and the engine overhead
    assert wasm.peak_flops("fp32") == pytest.approx(a76.peak_flops("fp32") / 2 / wasm.simd_overhead)
    op = Op.gemm(196, 256, 256, dtype="fp32", weight=Unstructured(0.1))
    t_native = mappers.best(op, a76, "xnn_spmm")[1].t_s
    t_wasm = mappers.best(op, wasm, "xnn_spmm")[1].t_s
    assert t_wasm > 1.5 * t_native


@pytest.mark.parametrize("name", CPU_SPECS)
@pytest.mark.parametrize("kernel", SPARSE_KERNELS)
def test_sparse_never_below_useful_flop_bound(name, kernel):
    spec = hwmodels.load(name)
    op = Op.gemm(784, 128, 512, dtype="fp32", weight=Unstructured(0.1))
    legal = mappers.search.legal_kernels(op, spec)
    if legal[kernel] is not None:
        pytest.skip(legal[kernel])
    for m in mappers.candidates(op, spec, kernel):
        c = cpu.cost(op, m, spec)
        threads = cpu.threads_of(spec, m)
        assert c.t_s >= op.useful_flops / (spec.peak_flops("fp32") * threads / spec.cores)


@FAST
@given(m=st.integers(1, 4000), n=st.integers(1, 512), k=st.integers(1, 512),
       d1=st.floats(0.01, 1.0), d2=st.floats(0.01, 1.0), kernel=st.sampled_from(SPARSE_KERNELS),
       spec_name=st.sampled_from(["host", "snapdragon-835", "wasm-simd128-x86"]))
def test_denser_never_cheaper_on_the_same_mapping(m, n, k, d1, d2, kernel, spec_name):
    spec = hwmodels.load(spec_name)
    lo, hi = sorted((d1, d2))
    sparse, dense = (Op.gemm(m, n, k, dtype="fp32", weight=Unstructured(d)) for d in (lo, hi))
    if mappers.search.legal_kernels(sparse, spec)[kernel] is not None:
        return
    if kernel == "cpu_bitmap" and hi > 0.5:
        # past half density the bitmap's bit tests grow predictable again (every bit set at d = 1: none
        # mispredicts), so a denser bitmap can be cheaper when the axpys are short; the mispredict sweep
        # (validation/data/cpu-host/mispredict-sweep-20261124T1540Z.json) measures that price
        return
    for mapping in mappers.candidates(sparse, spec, kernel):
        assert cpu.cost(dense, mapping, spec).t_s >= cpu.cost(sparse, mapping, spec).t_s * (1 - 1e-12)


@FAST
@given(m=st.integers(1, 5000), n=st.integers(1, 300), k=st.integers(1, 300), d=st.floats(0.01, 1.0),
       spec_name=st.sampled_from(CPU_SPECS))
def test_mapper_candidates_are_legal(m, n, k, d, spec_name):
    spec = hwmodels.load(spec_name)
    op = Op.gemm(m, n, k, dtype="fp32", weight=Unstructured(d))
    for mapping in mappers.candidates(op, spec):
        assert check_mapping(op, mapping, spec) == []


def test_block_nm_and_activation_kernels():
    spec = hwmodels.load("host")
    blk = Op.gemm(3136, 128, 128, dtype="fp32", weight=Block(4, 1, 0.1))
    assert {m.kernel for m in mappers.candidates(blk, spec)} >= {"cpu_bsr", "xnn_spmm_block", "cpu_csr"}
    nm = Op.gemm(196, 256, 512, dtype="fp32", weight=NM(1, 4))
    assert "cpu_nm" in {m.kernel for m in mappers.candidates(nm, spec)}
    gemv = Op.gemm(1, 4096, 4096, dtype="fp32", activation=Activation(0.1))
    full = Op.gemm(1, 4096, 4096, dtype="fp32", activation=Activation(0.5))
    t = [mappers.best(o, spec, "cpu_act_gemv")[1].t_s for o in (gemv, full)]
    assert t[0] < t[1] < mappers.best(gemv, spec, "cpu_dense_gemm")[1].t_s


def test_depthwise_and_numba_legality():
    dw = Op.conv2d(ConvGeom(1, 64, 56, 56, 64, 3, 3, 1, 1, groups=64), dtype="fp32")
    spec = hwmodels.load("snapdragon-835")
    # XNNPACK's dwconv and the numba CHW kernel (native code); no GEMM or sparse kernel runs a depthwise conv
    assert sorted(m.kernel for m in mappers.candidates(dw, spec)) == ["cpu_depthwise", "cpu_dwconv"]
    wasm = hwmodels.load("wasm-simd128-arm")
    assert [m.kernel for m in mappers.candidates(dw, wasm)] == ["cpu_depthwise"]  # numba does not target WASM
    op = Op.gemm(196, 64, 64, dtype="fp32", weight=Unstructured(0.1))
    why = mappers.search.legal_kernels(op, wasm)
    assert why["cpu_csr"] and why["xnn_spmm"] is None


def test_loop_steps_follow_the_compiled_loop_shape():
    # AVX-512: body of 4 x 16 lanes, epilogue of 8-lane vectors, scalar remainder
    assert cpu.loop_steps(64, 16) == (4.0, 0.0)
    assert cpu.loop_steps(49, 16) == (0.0, 7.0)  # 6 half-width trips + 1 scalar
    assert cpu.loop_steps(200, 16) == (12.0, 1.0)  # 3 bodies; 8 left = 1 half-width trip
    assert cpu.block_steps(200, 64, 16) == (4, 12.0, 1.0)


def test_numba_block_fits_half_of_l2():
    l2 = 2**20
    for k in (32, 128, 512, 1024):
        mb = numba_block(100_000, k, 4, l2)
        assert 256 <= mb <= 4096 and (k * mb * 4 <= l2 / 2 or mb == 256)
    assert numba_block(49, 1024, 4, l2) == 49
    assert numba_block(3136, 64, 4, l2, threads=4) <= math.ceil(3136 / 4) + 15


def test_numba_block_folds_a_small_remainder():
    l2 = 2**20
    # K = 768: half of L2 holds 170 pixels of X -> the 256-pixel floor; 289 = 256 + 33 and 33 < 256 / 4,
    # so the 33 pixels join the block: one block of 289
    assert numba_block(289, 768, 4, l2, remainder_min=0.0) == 256
    assert numba_block(289, 768, 4, l2) == 289
    # K = 48: 0.5 MiB / 192 B = 2730 -> 2688 pixels; 3136 = 2688 + 448, 448 < 672: one block
    assert numba_block(3136, 48, 4, l2) == 3136
    # K = 64: 2048-pixel blocks; 3136 = 2048 + 1088, a remainder over a quarter block: kept
    assert numba_block(3136, 64, 4, l2) == 2048
    # K = 512: 784 = 3 x 256 + 16: several full blocks are kept as they are
    assert numba_block(784, 512, 4, l2) == 256


@given(st.integers(1, 60_000), st.integers(1, 4096), st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=300, deadline=None)
def test_folding_only_ever_joins_one_block_and_a_small_remainder(m, k, threads):
    l2 = 2**20
    plain = numba_block(m, k, 4, l2, threads, remainder_min=0.0)
    mb = numba_block(m, k, 4, l2, threads)
    if mb != plain:  # folded: the split was one full block + a remainder under a quarter of it
        assert threads == 1 and mb == m and plain < m < plain * (1 + REMAINDER_MIN)
    assert mb <= plain * (1 + REMAINDER_MIN)  # the panel grows by at most a quarter


def test_decode_width_caps_instruction_rate():
    # no decode limit: the port counts alone (SD835: 1 load + 1 FMA per cycle, 1 store)
    sd = hwmodels.load("snapdragon-835")
    free = sd.replace(decode_width=0.0)
    assert cpu.default_params(free, "xnn")["c_nnz"] == pytest.approx(3.0)  # 2 loads + add/branch
    # a 1-wide front end decodes the 5 per-nonzero instructions in 5 cycles, the 2 per vector in 2
    narrow = sd.replace(decode_width=1.0)
    assert cpu.default_params(narrow, "xnn")["c_nnz"] == pytest.approx(5.0)
    assert cpu.default_params(narrow, "xnn")["c_vec"] == pytest.approx(2.0)
    # dense 6x8 tile, 4 lanes: per k 12 FMAs + 2 B + 1.5 A loads + 1 loop = 16.5 instructions
    op = Op.gemm(6, 8, 64, dtype="fp32")
    c = cpu.cost(op, Mapping("cpu_dense_gemm", params={"threads": 1}),
                 narrow.replace(dram_bw_gbps=1e12, efficiency={"gemm.c_pack": 0.0, "gemm.epilogue": 0.0}))
    assert c.cycles == pytest.approx(64 * 16.5)


def test_gemm_tile_epilogue_hand_counted():
    # per 6x8 tile of 4-lane vectors (12 accumulators) outside the k loop: 2 bias loads + 10 copies,
    # 24 min / max clamps, 12 stores, 6 pointer / loop instructions = 54 instructions
    sd = hwmodels.load("snapdragon-835")  # 2-wide decode: 27 cycles (ports: 12 stores, 24 clamps on 1 pipe)
    assert cpu.gemm_epilogue_cycles(sd, 6, 8, 4) == pytest.approx(27.0)
    a76 = hwmodels.load("cortex-a76")  # no decode limit; 2 store ports, 2 FP pipes: the clamps, 12 cycles
    assert cpu.gemm_epilogue_cycles(a76, 6, 8, 4) == pytest.approx(12.0)
    # a whole GEMM on the SD835 at the FMA rate: 12 x 16 x 8 is 4 tiles; k loop 12*16*8 / 4 lanes / 1 FMA
    # = 384 cycles (above its 4 * 8 k-steps * 16.5 / 2 = 264 decode cycles), + 4 x 27
    ideal = sd.replace(dram_bw_gbps=1e12, efficiency={"gemm.eff": 1.0, "gemm.c_pack": 0.0})
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})
    assert cpu.cost(Op.gemm(12, 16, 8, dtype="fp32"), mp, ideal).cycles == pytest.approx(384 + 4 * 27)
    # the same tiles over K = 512: the epilogue is 108 of 24684 cycles; at K = 8 it is 22 %
    long_k = cpu.cost(Op.gemm(12, 16, 512, dtype="fp32"), mp, ideal).cycles
    assert long_k == pytest.approx(12 * 16 * 512 / 4 + 108)
    # the host's fit absorbed it (gemm.epilogue 0): its committed cost is unchanged by the term
    host = hwmodels.load("host")
    assert host.efficiency["gemm.epilogue"] == 0 and cpu.gemm_epilogue_cycles(host, 16, 4, 16) == 0


def test_specs_without_the_new_fields_are_unchanged():
    for name in ("host", "cortex-a76", "snapdragon-855"):
        s = hwmodels.load(name)
        assert s.decode_width == 0 and s.l2_shared_bw_bytes_per_clk == 0
        assert cpu.issue(s, 100.0) == 0.0  # no front-end term enters their cycle costs


def test_shared_l2_binds_only_with_several_threads():
    sd = hwmodels.load("snapdragon-835")
    # one core: the 128-bit L1D read interface (16 B/cycle); four cores share 16 B/cycle in all
    assert cpu._panel_bw(sd, "l2", 1) == pytest.approx(16 * sd.clock_hz)
    assert cpu._panel_bw(sd, "l2", 4) == pytest.approx(16 * sd.clock_hz)
    op = Op.gemm(196, 512, 512, dtype="fp32", weight=Unstructured(0.1))  # a 14x14 K=512 1x1 conv
    t1 = cpu.cost(op, Mapping("xnn_spmm", tile=(32, op.n, op.k), params={"threads": 1}), sd).t_s
    t4 = cpu.cost(op, Mapping("xnn_spmm", tile=(32, op.n, op.k), params={"threads": 4}), sd).t_s
    assert t1 / t4 < 2.5  # far from 4x: the panel and weights stream from the shared L2


def test_one_block_scattered_segment_wait_is_off_unless_the_spec_sets_it():
    host = hwmodels.load("host").replace(residual_file="")
    spec = host.model_copy(update={"efficiency": {k: v for k, v in host.efficiency.items() if k != "xseg_one_block"}})
    on = spec.model_copy(update={"efficiency": {**spec.efficiency, "xseg_one_block": 1.0}})

    def core_s(m, s):
        op = Op(kind="gemm", m=m, n=768, k=2048, dtype="fp32", weight=Unstructured(0.1))
        mp = Mapping(kernel="cpu_csr", tile=(m, 768, 2048), params={"threads": 1})
        return cpu.cost(op, mp, s).breakdown_s["core"]

    # 49 pixels: a 196-byte segment is 4 lines, all covered by the L1 prefetcher: no wait
    assert core_s(49, on) == pytest.approx(core_s(49, spec))
    # 197 pixels: 788 B = 13 lines -> full length factor; 157,286 stored weights, each scattered with
    # probability 1 - 0.1; panel 2048 x 197 x 4 B + CSR weights, past half of the 1 MiB L2
    stored = 768 * 2048 * 0.1
    w_bytes = cpu._weight_stats(Op(kind="gemm", m=197, n=768, k=2048, dtype="fp32", weight=Unstructured(0.1)),
                                "cpu_csr")["bytes"]
    miss = 1 - 0.5 * 2**20 / (2048 * 197 * 4 + w_bytes)
    extra_cycles = stored * 0.9 * 1.0 * miss * cpu.params(spec, "numba")["c_xseg"]
    # on the host's fitted share of the clock (core_speed)
    core_hz = spec.clock_hz * spec.efficiency.get("core_speed", 1.0)
    assert core_s(197, on) - core_s(197, spec) == pytest.approx(extra_cycles / core_hz, rel=1e-6)


def test_bsr_short_pixel_loops_pay_no_accumulator_chain():
    host = hwmodels.load("host").replace(residual_file="")
    eff = {k: v for k, v in host.efficiency.items() if k != "cpu_bsr.chain_free_pixels"}
    eff.update({"numba.c_chain": 40.0, "cpu_bsr.c_blk": 0.0})  # a chain far above the per-update work
    every = host.model_copy(update={"efficiency": eff})
    short = host.model_copy(update={"efficiency": {**eff, "cpu_bsr.chain_free_pixels": 16.0}})
    p = cpu.params(every, "numba")

    def core_cycles(m, s, kernel="cpu_bsr", block=(1, 4)):
        w = Block(*block, 0.25) if kernel == "cpu_bsr" else Unstructured(0.25)
        op = Op(kind="gemm", m=m, n=64, k=64, dtype="fp32", weight=w)
        mp = Mapping(kernel=kernel, tile=(m, 64, 64), params={"threads": 1})
        return cpu.cost(op, mp, s).breakdown_s["core"] * s.clock_hz * s.efficiency.get("core_speed", 1.0)

    stored = 64 * 64 * 0.25  # 1x4 blocks at block density 0.25: 256 blocks of 4
    # 16 pixels, under the 64-float main body: two 8-float epilogue trips, so an update costs
    # c_nnz + 2 c_tail; the chain adds the rest of 40
    chain = stored * (40.0 - p["c_nnz"] - 2 * p["c_tail"])
    assert core_cycles(16, every) - core_cycles(16, short) == pytest.approx(chain, rel=1e-9)
    # from 17 pixels on the chain is paid again; CSR pays it at every length
    assert core_cycles(24, every) == pytest.approx(core_cycles(24, short), rel=1e-12)
    assert core_cycles(16, every, "cpu_csr") == pytest.approx(core_cycles(16, short, "cpu_csr"), rel=1e-12)


def test_core_speed_scales_on_chip_time_only():
    # a campaign's share of the core's clock (host state ``core_speed``) stretches core and cache time by
    # 1 / share and leaves DRAM time alone
    full = _ideal("host")
    half = full.model_copy(update={"efficiency": {**full.efficiency, "core_speed": 0.5}})
    gemm = Op.gemm(64, 32, 128, dtype="fp32")  # compute bound: 16384 cycles (hand count above)
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})
    assert cpu.cost(gemm, mp, half).t_s == pytest.approx(2 * 16384 / full.clock_hz, rel=1e-9)
    slow_mem = full.replace(dram_bw_gbps=0.001)  # 1 MB/s: DRAM bound by far
    slow_half = slow_mem.model_copy(update={"efficiency": {**slow_mem.efficiency, "core_speed": 0.5}})
    assert cpu.cost(gemm, mp, slow_half).breakdown_s["dram"] == pytest.approx(
        cpu.cost(gemm, mp, slow_mem).breakdown_s["dram"], rel=1e-12)
    # every campaign's share, as the spec stores it (its own fit shrunk toward the median, STATE_SHRINK), stays
    # near the full clock: 1.00-1.08, and 1.115 for campaign 30 (raw fits 0.98-1.10 and 1.14), whose state was
    # fitted on six layers all outside the earlier fit range and absorbed the model's error on them
    # (validation/data/cpu-host/README.md, "Campaign 30", "Shrunk states")
    shares = {k: v for k, v in hwmodels.load("host").efficiency.items() if k.partition("@")[0] == "core_speed"}
    assert len(shares) >= 20 and all(0.9 <= v <= 1.15 for v in shares.values()), shares


def test_xnnpack_spmm_runs_128_bit_vectors_on_wide_x86_cores():
    # XNNPACK has SSE, NEON and WASM SIMD f32-spmm micro-kernels, none for AVX / AVX-512: on an AVX-512 core
    # its 32-pixel block takes 32 / 4 = 8 vectors per stored weight, not 2, whatever the spec's width;
    # the numba kernels, vectorised by the compiler, use the full width
    srv = hwmodels.load("avx512-server").replace(threads=1)
    op = Op.gemm(64, 256, 256, dtype="fp32", weight=Unstructured(0.1))

    def core(kernel, spec):
        return cpu.cost(op, Mapping(kernel, tile=(32, op.n, op.k), params={"threads": 1}), spec).breakdown_s["core"]

    narrow = srv.replace(simd_bits=128)
    assert core("xnn_spmm", srv) == pytest.approx(core("xnn_spmm", narrow))
    assert core("xnn_spmm", srv) == pytest.approx(core("xnn_spmm", srv.replace(simd_bits=256)))
    assert core("cpu_csr", srv) < core("cpu_csr", narrow)


def test_energy_is_unknown_without_a_power_figure():
    # a spec with no power rating cannot price energy: NaN (unknown), never 0 J (free)
    import simsparse

    op = Op.gemm(256, 256, 256, dtype="fp32")
    sd = hwmodels.load("snapdragon-835")
    assert sd.tdp_w == 0 and math.isnan(simsparse.simulate(op, sd).energy_j)
    srv = hwmodels.load("avx512-server")  # 350 W over 56 cores: busy cores' share x time
    r = simsparse.simulate(op, srv).results[0]
    threads = r.mapping.params.get("threads") or srv.threads or srv.cores
    assert r.cost.energy_j == pytest.approx(r.cost.t_s * 350 * threads / 56, rel=1e-9)


@pytest.mark.parametrize("hw", CPU_SPECS)
def test_attention_pays_for_its_softmax(hw):
    # same FLOPs (4 * q * kv * head_dim), four times the scores: the softmax over each score costs core
    # time, so the second computes longer (its Q, K, V are smaller: compare core time, not memory); and
    # neither runs at the machine's peak
    import simsparse

    few = Op.attention(AttnGeom(1, 8, 512, 512, 128), dtype="fp32")
    many = Op.attention(AttnGeom(1, 8, 1024, 1024, 32), dtype="fp32")
    assert few.flops == many.flops
    r_few, r_many = simsparse.simulate(few, hw), simsparse.simulate(many, hw)
    core = [r.results[0].cost.breakdown_s["core"] for r in (r_few, r_many)]
    assert core[1] > core[0]
    assert r_few.results[0].cost.utilisation < 1.0
