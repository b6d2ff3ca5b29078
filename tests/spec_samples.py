"""A minimal valid GPU spec (YAML text) shared by the spec-loading and fuzz tests."""

TINY_GPU_YAML = """
name: tiny
hw_class: gpu
display_name: tiny
sm_count: {value: 1, source: test}
clock_hz: {value: 1.0e9, source: test}
tc_flops_per_clk_per_sm: {fp16: {value: 1024, source: test}}
cuda_fp32_flops_per_clk_per_sm: {value: 128, source: test}
hbm_bw_gbps: {value: 100, source: test}
hbm_bytes: {value: 1.0e9, source: test}
l2_bytes: {value: 1.0e6, source: test}
smem_bytes_per_sm: {value: 65536, source: test}
"""
