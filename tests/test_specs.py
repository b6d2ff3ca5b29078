"""Hardware specs: loading, sources required, what-ifs, clear errors."""

import pytest
from spec_samples import TINY_GPU_YAML

import hwmodels
from hwmodels.spec import load_file
from simsparse.core.errors import SpecError


def test_builtin_gpus_load_and_peaks_match_datasheets():
    names = hwmodels.list()
    for n in ("h100-sxm", "a100-sxm4-80g", "h200", "v100", "t4"):
        assert n in names
    # datasheet dense FP16 Tensor peaks (TFLOP/s): H100 SXM 989.4, A100 312, V100 125, T4 65
    for n, tf in (("h100-sxm", 989.4), ("a100-sxm4-80g", 312), ("v100", 125), ("t4", 65)):
        assert hwmodels.load(n).peak_flops("fp16") / 1e12 == pytest.approx(tf, rel=0.01)
    assert hwmodels.load("h100-sxm").peak_flops("fp16", (2, 4)) / 1e12 == pytest.approx(1978.9, rel=0.01)


def test_every_number_has_a_source():
    for n in hwmodels.list():
        s = hwmodels.load(n)
        assert s.sources, n
        assert all(v.strip() for v in s.sources.values())


def test_replace_is_a_what_if_copy():
    s = hwmodels.load("h100-sxm")
    t = s.replace(hbm_bw_gbps=4800)
    assert t.dram_bw == 4.8e12 and s.dram_bw == 3.35e12
    assert t.sources["hbm_bw_gbps"] == "what-if override"
    with pytest.raises(SpecError, match="hbm_bw"):
        s.replace(hbm_bw_gbs=1)
    with pytest.raises(SpecError, match="hbm_bw_gbps"):
        s.replace(hbm_bw_gbps=-5)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(SpecError, match="did you mean h100-sxm"):
        hwmodels.load("h100-smx")


def test_aliases_load_their_spec():
    # every alias a spec file declares loads that file, in any case
    for n in hwmodels.list():
        for alias in hwmodels.load(n).aliases:
            assert hwmodels.load(alias.upper()).name == n
    assert hwmodels.load("sd835").name == "snapdragon-835"


def test_an_alias_may_not_shadow_a_name(tmp_path, monkeypatch):
    from hwmodels import spec as spec_mod

    (tmp_path / "a.yaml").write_text(GOOD.replace("name: tiny", "name: a") + "aliases: [b]\n")
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: tiny", "name: b"))
    monkeypatch.setattr(spec_mod, "SPEC_DIR", tmp_path)
    with pytest.raises(SpecError, match="aliases: 'b' already names b"):
        hwmodels.load("c")


GOOD = TINY_GPU_YAML


def test_spec_file_loads(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(GOOD)
    s = load_file(p)
    assert s.peak_flops("fp16") == 1024 * 1e9


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed\n", "malformed YAML at line"),
    (GOOD.replace("sm_count: {value: 1, source: test}", "sm_count: 1"), "without a source: sm_count"),
    (GOOD.replace("hw_class: gpu", "hw_class: tpu"), "hw_class"),
    (GOOD.replace("{value: 1, source: test}", "{value: -1, source: test}", 1), "sm_count"),
    (GOOD + "bogus_field: {value: 1, source: x}\n", "bogus_field"),
    (GOOD.replace("hbm_bw_gbps: {value: 100, source: test}\n", ""), "hbm_bw_gbps"),
    ("- just\n- a list\n", "mapping"),
    (GOOD + "measured_kernels: {value: {cublass: [fp16]}, source: x}\n", r"measured_kernels: unknown \['cublass'\].*allowed: cublas"),
    (GOOD + "measured_kernels: {value: {cublas: [fp17]}, source: x}\n", r"measured_kernels.cublas: got \['fp17'\]; allowed"),
    (GOOD + "measured_kernels: {cublas: [fp16]}\n", "without a source: measured_kernels"),
])
def test_bad_spec_files_give_one_clear_line(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=needle) as e:
        load_file(p)
    assert "\n" not in str(e.value)
