"""CPU measurement harness: time the package's numba sparse kernels and the BLAS baseline on
this machine, following shared/MEASURING.md (CPU section).

    simsparse measure --device cpu [--out DIR] [--quick] [--probe-only]
    python -m simsparse.measure_cpu --out validation/data/cpu-host

What it does, in order:

1. pins itself to one core (``--core``, default 1), numba to 1 thread and OpenBLAS to 1
   thread (env vars set before numpy loads; the OpenBLAS C API through ctypes afterwards;
   threadpoolctl when installed), and records the machine: CPU model, ISA flags, cores,
   caches (/sys), numpy / numba / BLAS versions, OPENBLAS_CORETYPE, load average;
2. ``probe``: measures this core's DRAM / L3 / L2 read bandwidth, L1 axpy throughput and the
   dense sgemm FLOP rate → ``probe-<stamp>.json`` (the source of the ``host`` spec numbers);
3. the grid: 1x1 convolutions of MobileNet v1 / v2 and ResNet-50 and LLM projections, at
   weight densities 0.5 … 0.02, for cpu_csr, cpu_bitmap, cpu_bsr (4x1, 1x4), cpu_nm (2:4,
   1:4, 1:8) and dense BLAS; activation-sparse GEMV against dense sgemv. Each point: the
   mapper's pixel block, operands rotated over copies worth 2x the LLC (at most 32 of one
   mask by default; ``--cold``: no cap and a different mask per copy, so every call finds its
   operands cold and its branch sequence new), a correctness check against the dense product,
   warm-up, then
   ``perf_counter_ns`` repeats until >= 0.2 s (median, quartiles, min kept);
4. a second pass over every point in reverse order (``--complete FILE``: the missing second pass of
   a campaign that stopped early, into its own file); other tenants of a shared machine only
   ever add time, so the pass with the lower median is kept (both medians recorded). Each pass
   runs in its own freshly spawned process (``--same-process``: both in one, as campaigns 1-14
   were): one process times a point alike to ~1 % however its operands are allocated, while
   another process can time it 10-80 % apart (validation/data/cpu-host/README.md, campaign 14).

Rows are JSON lines (``type: machine | point``), written as they are measured, into
``<out>/kernels-<stamp>.jsonl``. Each row carries its calibration split: hash of (N, K)
even → ``fit``, odd → ``validate`` (shared/MEASURING.md).
"""

from __future__ import annotations

import os

# BLAS threads must be fixed before numpy loads its BLAS; remember whether the user set them
_USER_ENV = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS")}
for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "validation" / "data" / "cpu-host"  # repo checkout
ROTATION_BYTES = 64 * 2**20  # 2x the 32 MiB LLC of the host this was written on; re-read from /sys
MIN_POINT_S = 0.2
MAX_POINT_S = 2.0

# --- layer tables: 1x1 convolutions (C_in -> C_out @ H*W pixels, batch 1) ---------------------

MOBILENET_V1_1X1 = [(32, 64, 112 * 112), (64, 128, 56 * 56), (128, 128, 56 * 56), (128, 256, 28 * 28),
                    (256, 256, 28 * 28), (256, 512, 14 * 14), (512, 512, 14 * 14), (512, 1024, 7 * 7),
                    (1024, 1024, 7 * 7)]
MOBILENET_V2_1X1 = [(96, 24, 56 * 56), (24, 144, 56 * 56), (144, 32, 28 * 28), (192, 64, 14 * 14),
                    (576, 160, 7 * 7), (960, 320, 7 * 7), (320, 1280, 7 * 7)]
RESNET50_1X1 = [(256, 64, 56 * 56), (64, 256, 56 * 56), (512, 128, 28 * 28), (1024, 256, 14 * 14),
                (2048, 512, 7 * 7)]
# 1x1 convolutions (cin, cout, pixels) that no network table above has, in regimes the model's
# fit half covered thinly (validation/data/cpu-host/README.md, eighth fit): several pixel blocks
# of 170-512 px with K = 256-768, one 196-pixel block with N = 192-512, and small layers whose
# 32-copy rotation is 3-8 MB; crc32 split: the first 8 fall in the fit half, the last 6 are held out
REGIME_1X1 = [(768, 192, 784), (768, 256, 1568), (640, 160, 784), (320, 320, 784), (768, 512, 196),
              (128, 64, 196), (64, 160, 196), (192, 96, 196),
              (256, 384, 784), (512, 256, 784), (384, 192, 784), (384, 384, 196), (512, 384, 196),
              (96, 192, 196)]
# 1x1 layers of other networks (EfficientNet-B0, ShuffleNet-v2, SqueezeNet, a 512-wide bottleneck)
# that no table above has: measured after the ninth fit as its unseen check, both halves
NEW_1X1 = [(240, 40, 784), (1152, 192, 49), (256, 32, 729), (464, 464, 49), (128, 512, 784),
           (40, 240, 784), (480, 80, 196), (80, 480, 196), (672, 112, 196), (112, 672, 196),
           (116, 116, 784), (232, 232, 196)]
# more 1x1 layers no table above has (MobileNet v3-Large, GoogLeNet, DenseNet-121): measured after the
# tenth fit as its unseen check; crc32 split: the first 8 fall in the fit half, the last 8 are held out
NEW2_1X1 = [(16, 64, 12544), (160, 960, 49), (832, 256, 49), (96, 128, 3136), (224, 128, 3136), (512, 160, 196),
            (528, 256, 196), (480, 112, 196),
            (72, 24, 3136), (40, 120, 784), (120, 40, 784), (200, 80, 196), (80, 200, 196), (960, 160, 49),
            (480, 192, 196), (256, 128, 3136)]
# more 1x1 layers no table above has (ConvNeXt-T, SqueezeNet, ShuffleNet-v2 2.0x, RegNet-like, MnasNet,
# EfficientNet-B0's remaining ones): measured after the eleventh fit as its unseen check; crc32 split:
# the first 8 fall in the fit half, the last 8 are held out
NEW3_1X1 = [(384, 96, 3136), (384, 1536, 196), (128, 16, 3025), (488, 488, 196), (1152, 320, 49), (400, 400, 49),
            (144, 40, 784), (288, 96, 196),
            (1536, 384, 196), (96, 16, 3025), (244, 244, 784), (976, 976, 49), (144, 24, 3136), (240, 80, 196),
            (64, 64, 784), (576, 96, 49)]
# more 1x1 layers no table above has (Inception-v3, GhostNet, MobileNet v3-Small, EfficientNet-B1): measured
# after the twelfth fit as its unseen check; crc32 split: the first 8 fall in the fit half, the last 8 are held out
NEW4_1X1 = [(768, 128, 289), (1280, 320, 64), (2048, 192, 64), (16, 48, 3136), (72, 40, 784), (88, 24, 784),
            (48, 144, 784), (112, 336, 196),
            (256, 48, 1225), (288, 64, 1225), (768, 160, 289), (48, 16, 3136), (96, 576, 196), (144, 48, 784),
            (72, 72, 3136), (336, 112, 196)]
# more 1x1 layers no table above has (ResNeXt-50 32x4d, MobileNet v1 0.5, MobileNet v2's 28x28 and 14x14
# blocks, EfficientNet-B2 / B3 at a 224-pixel input): measured after the thirteenth fit as its unseen check,
# one process per pass; crc32 split: the first 8 fall in the fit half, the last 8 are held out
NEW5_1X1 = [(1024, 512, 196), (1024, 2048, 49), (16, 32, 12544), (192, 32, 784), (32, 192, 784), (136, 816, 196),
            (1248, 208, 49), (88, 528, 196),
            (2048, 1024, 49), (384, 64, 196), (64, 384, 196), (48, 288, 784), (288, 48, 784), (1392, 232, 49),
            (232, 1392, 49), (816, 136, 196)]
# DenseNet-121 / -169 dense-block bottlenecks (C_in -> 128 at 56x56, 28x28, 14x14 and 7x7) and
# EfficientNet-B0's stage-6 expansion, none of whose (N, K) any table above has: measured after the
# fourteenth fit as its unseen check; crc32 split: the first 8 fall in the fit half, the last 8 are held out
NEW6_1X1 = [(160, 128, 3136), (320, 128, 784), (672, 128, 196), (736, 128, 196), (1056, 128, 196), (864, 128, 49),
            (928, 128, 49), (192, 1152, 49),
            (192, 128, 3136), (288, 128, 784), (416, 128, 784), (480, 128, 784), (544, 128, 196), (608, 128, 196),
            (800, 128, 49), (992, 128, 49)]
# EfficientNet-B4 / -B5 at a 224-pixel input (stages 3, 5-7 and the head) and Xception's middle, exit and
# entry flows at 299 pixels, none of whose (N, K) any table above has: measured after campaign 18 as a
# second unseen check of the fourteenth fit; crc32 split: the first 8 fall in the fit half, the last 8 are
# held out
NEW7_1X1 = [(56, 336, 784), (336, 56, 784), (272, 1632, 49), (448, 2688, 49), (2688, 448, 49), (728, 728, 361),
            (1536, 2048, 100), (1824, 304, 49),
            (192, 56, 784), (672, 160, 196), (960, 272, 49), (1632, 272, 49), (448, 1792, 49), (728, 1024, 361),
            (1024, 1536, 100), (256, 728, 1369)]
# ConvNeXt-T (stages 1-2), ViT-B/16 MLP and attention projections at 197 tokens, BERT-large at 128 tokens,
# SqueezeNet 1.1's fire modules at 224 pixels, RegNetY-400MF, MobileNet v3-Large and MnasNet, none of whose
# (N, K) any table above has: measured after the fourteenth fit as its third unseen check, with the pixel block
# that folds a small remainder (mappers.cpu.REMAINDER_MIN); crc32 split: the first 8 fall in the fit half,
# the last 8 are held out
NEW8_1X1 = [(96, 384, 3136), (3072, 768, 197), (768, 768, 197), (1024, 4096, 128), (64, 16, 3025), (48, 48, 3136),
            (440, 440, 49), (32, 16, 12544),
            (192, 768, 784), (768, 3072, 197), (4096, 1024, 128), (128, 32, 729), (48, 192, 169), (104, 208, 784),
            (208, 208, 196), (80, 184, 196)]
# transformer projections (GPT-2 small's fused QKV and T5-small's feed-forward at 128 tokens; ViT-L/16, ViT-S/16
# and DeiT-Ti fused QKV at 197 tokens; Swin-B's stage-2 MLP; MobileViT-S's transformer MLPs per patch position)
# and CNN layers (RegNetX-1.6GF, DenseNet-201), none of whose (N, K) any table above has: measured after
# campaign 21 as an unseen check; crc32 split: the first 8 fall in the fit half, the last 8 are held out
NEW9_1X1 = [(768, 2304, 128), (1024, 3072, 197), (384, 1152, 197), (192, 576, 197), (256, 1024, 784),
            (168, 168, 784), (168, 408, 784), (144, 288, 256),
            (512, 2048, 128), (288, 144, 256), (192, 384, 64), (240, 480, 16), (408, 408, 196), (72, 168, 3136),
            (408, 912, 196), (1120, 128, 196)]
# transformer projections at 128 / 257 tokens (T5-small's fused QKV, T5 v1.1-base's feed-forward, Qwen2-0.5B's
# attention and MLP, TinyLlama-1.1B's attention, ViT-H/14's attention output), LeViT-128S's stage-3 MLP at 16
# tokens, MobileViT-XS's stage-4 MLP per patch position and ShuffleNet v2 1.0x's stage-2 1x1 convs, none of whose
# (N, K) any table above has: measured after the fifteenth fit as its unseen check; crc32 split: the first 8
# fall in the fit half, the last 8 are held out
NEW10_1X1 = [(768, 384, 16), (240, 120, 64), (512, 1536, 128), (768, 2048, 128), (2048, 768, 128), (896, 896, 128),
             (4864, 896, 128), (1280, 1280, 257),
             (384, 768, 16), (120, 240, 64), (58, 58, 784), (24, 58, 3136), (896, 4864, 128), (2048, 2048, 128),
             (2048, 256, 128), (896, 128, 128)]
# LLM projections (Qwen2-1.5B's KV at 128 tokens, attention output at 128 and MLP at 16; Pythia-1B's fused QKV at
# 16 tokens; Phi-2's attention at 64), ViT-H/14's fused QKV at 257 tokens, RegNetY-800MF, EfficientNetV2-S's
# last stage, EfficientNet-B5's stages 4-6 at a 224-pixel input and YOLOv5s's first C3 block at 640 pixels,
# none of whose (N, K) any table above has: measured after the sixteenth fit as its unseen check; crc32 split:
# the first 8 fall in the fit half, the last 8 are held out
NEW11_1X1 = [(1536, 256, 128), (2048, 6144, 16), (784, 784, 49), (256, 1536, 49), (1536, 256, 49), (2560, 2560, 64),
             (1280, 3840, 257), (128, 768, 196),
             (1536, 1536, 128), (1536, 8960, 16), (8960, 1536, 16), (144, 144, 784), (64, 144, 3136),
             (176, 1056, 196), (304, 1824, 49), (32, 32, 25600)]
# small-LLM projections at 128 tokens (SmolLM-135M and -360M, Gemma-3-270M: attention, KV and MLP), Llama-3.2-1B's
# MLP at 16 tokens, EfficientFormer-L1's stage-3 MLP and DenseNet-161's bottlenecks (blocks 1-2), none of whose
# (N, K) any table above has: measured after campaign 24 as a second unseen check of the sixteenth fit; crc32
# split: the first 8 fall in the fit half, the last 8 are held out
NEW12_1X1 = [(1536, 576, 128), (576, 192, 128), (2560, 960, 128), (960, 960, 128), (2048, 640, 128), (640, 1024, 128),
             (336, 192, 3136), (672, 192, 784),
             (576, 1536, 128), (576, 576, 128), (960, 2560, 128), (640, 2048, 128), (640, 256, 128), (2048, 8192, 16),
             (224, 896, 196), (240, 192, 3136)]
# campaign 26 (after the seventeenth fit): ConvNeXt-Nano MLPs (timm convnext_nano: dims 80 / 160 / 320 / 640, 4x
# MLP), Qwen2.5-3B MLP and Gemma-2-2B projections at 128 tokens (hidden 2048 / 2304, 8 KV heads x 128 / 4 x 256),
# Gemma-2-2B MLP at 16 tokens (9216), EfficientNet-B2 expand / project convs (widths 88, 120, 208)
NEW13_1X1 = [(80, 320, 3136), (320, 80, 3136), (160, 640, 784), (640, 2560, 49), (2560, 640, 49),
             (2048, 11008, 128), (11008, 2048, 128), (2048, 2304, 128), (2304, 1024, 128),
             (2304, 9216, 16), (9216, 2304, 16),
             (528, 88, 196), (120, 720, 196), (720, 120, 196), (208, 1248, 49), (2304, 2048, 128)]
# Fourteenth table (campaign 27, the first unseen check of the learned residual): RegNetY-1.6GF (336, 888,
# 120-wide stages), RegNetX-800MF (288, 672), DenseNet-121 bottlenecks (352 / 448 inputs), GPT-2 XL MLP at 64
# tokens, Phi-3-mini projections at 128 tokens, Mistral-7B projections at 16 tokens; no (N, K) of an earlier table
NEW14_1X1 = [(336, 336, 196), (888, 888, 49), (120, 120, 784), (48, 120, 3136), (120, 336, 784),
             (288, 288, 196), (672, 672, 49), (352, 128, 784), (448, 128, 784), (1600, 6400, 64),
             (3072, 8192, 128), (8192, 3072, 128), (3072, 9216, 128),
             (4096, 14336, 16), (14336, 4096, 16), (4096, 6144, 16)]
# Fifteenth table (campaign 28, the unseen check of the cross-fitted residual): MobileNet v3-Large (24 -> 72 at
# 56x56, 184 -> 80) and v3-Small (16 -> 72, 24 -> 88 / 96, 96 -> 40, 120 -> 48) expand / project convs,
# SqueezeNet 1.1 fire modules (32 -> 128 at 27x27, 384 -> 48 and 512 -> 64 at 13x13), ShuffleNet v2 x2.0 branch
# convs (24 -> 122 at 56x56, 122 -> 122 at 28x28), RegNetX-400MF's 160-wide stage, GPT-2 large MLP at 32 tokens,
# Llama-3.2-1B's down projection at 64 tokens; no (N, K) of an earlier table
NEW15_1X1 = [(24, 72, 3136), (184, 80, 196), (16, 72, 3136), (24, 88, 784), (24, 96, 784), (96, 40, 196),
             (120, 48, 196), (32, 128, 729), (384, 48, 169), (512, 64, 169), (24, 122, 3136), (122, 122, 784),
             (160, 160, 196), (1280, 5120, 32), (5120, 1280, 32), (8192, 2048, 64)]
# Sixteenth table (campaign 29): layers at odd feature-map sizes and token counts, whose compiler-vectorised
# pixel loops end in 8-wide (half-vector) trips plus a scalar remainder (M mod 16 = 9, 13, 25, ...: 1 to 7
# half-vector trips), a tail the earlier tables' fit halves rarely have: Inception-v3's 35x35 and 17x17 1x1 convs,
# YOLOv3-416's 13x13 and 26x26 heads, EfficientNet-B3 at 300 pixels (75x75, 38x38, 19x19), SqueezeNet 1.0 (55x55,
# 27x27), CLIP's text encoder at 77 tokens, ViT-S/32 at 50, Whisper-tiny's encoder at 1500 frames, ResNet-50's
# last stage at 320 pixels (10x10). Some (N, K) repeat an earlier table's at another M (same split), which
# isolates the pixel count (SqueezeNet's 256 -> 32 at 27x27 repeats NEW_1X1's layer); crc32 split: the first 10
# fall in the fit half, the last 10 are held out
NEW16_1X1 = [(192, 32, 1225), (768, 192, 289), (576, 136, 361), (1024, 512, 169), (768, 256, 676), (256, 32, 729),
             (512, 1536, 77), (384, 1536, 1500), (32, 192, 5625), (384, 1152, 50),
             (192, 48, 1225), (192, 64, 1225), (48, 288, 1444), (96, 576, 361), (48, 192, 729), (256, 48, 729),
             (2048, 512, 77), (1536, 384, 1500), (128, 32, 3025), (2048, 512, 100)]
# Seventeenth table (campaign 30): high-resolution layers of 9216-50176 pixels, above every fit-half layer of
# the earlier tables (at most 12544): ConvNeXt-T's stage-1 MLP at 384 pixels, MobileNet v2 at 448 pixels (224x224
# and 112x112 blocks), SegFormer's MiT-B0 / -B1 stage-1 MLPs at 512 pixels (128x128), YOLOv5s's first C3 block at
# 640 pixels (160x160), DeepLabv3+'s low-level projection at 513 pixels (129x129); crc32 split: the first 6 fall in
# the fit half, the last 6 are held out
NEW17_1X1 = [(96, 384, 9216), (384, 96, 9216), (16, 96, 50176), (32, 16, 50176), (96, 24, 12544), (64, 256, 16384),
             (64, 32, 25600), (32, 128, 16384), (128, 32, 16384), (256, 64, 16384), (24, 144, 12544), (256, 48, 16641)]
# Depthwise convolutions (kernel cpu_dwconv, CHW, one image, fp32): every distinct (channels, input size, kernel,
# stride) of MobileNet v1 at widths 0.75 / 1.0 / 1.4, MobileNet v2 at 0.5 / 0.8 / 1.0 / 1.15 / 1.4 and EfficientNet-B0,
# 224-pixel input (the networks of the Snapdragon 835 comparison; workloads.cnn), then the 5x5 layers of MobileNet v3
# Large and Small (Howard et al. 2019, Tables 1-2: expansion width at its input size) that the first part lacks;
# padding kernel // 2; (C, H = W, k, s)
DEPTHWISE = [(480, 7, 3, 1), (768, 7, 3, 1), (960, 7, 3, 1), (1024, 7, 3, 1), (1104, 7, 3, 1), (1152, 7, 3, 1),
             (1344, 7, 3, 1), (1433, 7, 3, 1), (192, 14, 3, 1), (288, 14, 3, 1), (384, 14, 3, 1), (432, 14, 3, 1),
             (480, 14, 3, 1), (512, 14, 3, 1), (528, 14, 3, 1), (576, 14, 3, 1), (672, 14, 3, 1), (716, 14, 3, 1),
             (816, 14, 3, 1), (96, 28, 3, 1), (144, 28, 3, 1), (192, 28, 3, 1), (240, 28, 3, 1), (256, 28, 3, 1),
             (288, 28, 3, 1), (358, 28, 3, 1), (96, 56, 3, 1), (128, 56, 3, 1), (144, 56, 3, 1), (179, 56, 3, 1),
             (192, 56, 3, 1), (16, 112, 3, 1), (24, 112, 3, 1), (32, 112, 3, 1), (40, 112, 3, 1), (44, 112, 3, 1),
             (48, 112, 3, 1), (288, 14, 3, 2), (384, 14, 3, 2), (480, 14, 3, 2), (512, 14, 3, 2), (576, 14, 3, 2),
             (672, 14, 3, 2), (716, 14, 3, 2), (816, 14, 3, 2), (96, 28, 3, 2), (144, 28, 3, 2), (192, 28, 3, 2),
             (240, 28, 3, 2), (256, 28, 3, 2), (288, 28, 3, 2), (358, 28, 3, 2), (96, 56, 3, 2), (128, 56, 3, 2),
             (144, 56, 3, 2), (179, 56, 3, 2), (192, 56, 3, 2), (48, 112, 3, 2), (64, 112, 3, 2), (89, 112, 3, 2),
             (96, 112, 3, 2), (144, 112, 3, 2), (1152, 7, 5, 1), (480, 14, 5, 1), (672, 14, 5, 1), (240, 28, 5, 1),
             (672, 14, 5, 2), (144, 56, 5, 2),
             (72, 56, 5, 2), (120, 28, 5, 1), (960, 7, 5, 1), (96, 28, 5, 2), (240, 14, 5, 1), (120, 14, 5, 1),
             (144, 14, 5, 1), (288, 14, 5, 2), (576, 7, 5, 1)]
# Dense KxK convolutions (kernel cpu_dense_gemm on a convolution: im2col + BLAS, kernels.cpu.conv2d_im2col; CHW,
# one image, fp32), (C_in, H = W, C_out, k, stride, pad), from the networks' published definitions: ResNet-18 /
# ResNet-50 (He et al. 2016, Table 1; torchvision: the stem and every distinct 3x3 conv, v1.5 stride in the 3x3),
# the stems of MobileNet v1 / v2 / v3 and EfficientNet-B0 at 224 px (widths 16 / 24 / 32 / 44 / 48) and of
# EfficientNet-B2 / -B3 at their 260 / 300 px, YOLOv5s at 640 px (its 6x6 s2 stem, 3x3 s2 down-sampling and the
# C3 bottlenecks' 3x3 convs), DenseNet-121's growth convs (128 -> 32), VGG-16 / U-Net-style 3x3 at 28 and 14 px,
# AlexNet's 11x11 s4 and 5x5 convs, ConvNeXt's 4x4 s4 and ViT-B/16's 16x16 s16 patchify stems, a ResNet-D deep
# stem and the Inception-v3 stem (unpadded 3x3)
DENSE_CONVS = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 3, 1, 1), (64, 56, 128, 3, 2, 1), (128, 28, 128, 3, 1, 1),
               (128, 28, 256, 3, 2, 1), (256, 14, 256, 3, 1, 1), (256, 14, 512, 3, 2, 1), (512, 7, 512, 3, 1, 1),
               (128, 56, 128, 3, 2, 1), (256, 28, 256, 3, 2, 1), (512, 14, 512, 3, 2, 1),
               (3, 224, 16, 3, 2, 1), (3, 224, 24, 3, 2, 1), (3, 224, 32, 3, 2, 1), (3, 224, 44, 3, 2, 1),
               (3, 224, 48, 3, 2, 1), (3, 260, 32, 3, 2, 1), (3, 300, 40, 3, 2, 1),
               (3, 640, 32, 6, 2, 2), (32, 320, 64, 3, 2, 1), (64, 160, 128, 3, 2, 1), (128, 80, 256, 3, 2, 1),
               (256, 40, 512, 3, 2, 1), (32, 160, 32, 3, 1, 1), (64, 80, 64, 3, 1, 1), (128, 40, 128, 3, 1, 1),
               (256, 20, 256, 3, 1, 1),
               (128, 56, 32, 3, 1, 1), (128, 28, 32, 3, 1, 1), (128, 14, 32, 3, 1, 1), (128, 7, 32, 3, 1, 1),
               (256, 28, 256, 3, 1, 1), (512, 14, 512, 3, 1, 1),
               (3, 224, 64, 11, 4, 2), (64, 27, 192, 5, 1, 2), (3, 224, 96, 4, 4, 0), (3, 224, 768, 16, 16, 0),
               (32, 112, 32, 3, 1, 1), (32, 112, 64, 3, 1, 1),
               (3, 299, 32, 3, 2, 0), (32, 149, 32, 3, 1, 0), (32, 147, 64, 3, 1, 1), (80, 73, 192, 3, 1, 0)]
LLM_SPMM = [(4096, 4096, 16), (4096, 11008, 16), (5120, 13824, 16)]  # (K, N, tokens): Llama-2 7B/13B
LLM_GEMV = [(4096, 4096), (11008, 4096), (4096, 11008), (5120, 13824), (13824, 5120)]  # (K, N) decode

DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02)
LLM_DENSITIES = (0.1, 0.05, 0.02)  # long calls at higher density are at the mercy of other tenants
BLOCK_DENSITIES = (0.5, 0.2, 0.1, 0.05)
BLOCKS = ((4, 1), (1, 4))
NM_PATTERNS = ((2, 4), (1, 4), (1, 8))
ACT_DENSITIES = (0.5, 0.3, 0.1, 0.05)


def split_of(n: int, k: int) -> str:
    """Calibration split by shape, the project's rule (simsparse.validate.half_of): crc32 of
    'NxK' even → fit, odd → validate."""
    return "fit" if zlib.crc32(f"{int(n)}x{int(k)}".encode()) % 2 == 0 else "validate"


def is_depthwise_conv(conv: dict[str, int]) -> bool:
    """Whether a row's convolution geometry is a depthwise one (its groups equal its channels; the rows of
    campaign 31 carry no groups: all depthwise)."""
    return int(conv.get("groups", conv["c"])) == int(conv["c"]) and int(conv.get("c_out", conv["c"])) == int(conv["c"])


def conv_split_of(conv: dict[str, int]) -> str:
    """The same rule for a convolution, on its geometry: crc32 of 'dw CxH kK sS' (depthwise) or of
    'conv CxH-N kK sS pP' (dense, N output channels) even → fit."""
    if is_depthwise_conv(conv):
        key = f"dw{int(conv['c'])}x{int(conv['h'])}k{int(conv['kh'])}s{int(conv['stride'])}"
    else:
        key = (f"conv{int(conv['c'])}x{int(conv['h'])}-{int(conv['c_out'])}k{int(conv['kh'])}s{int(conv['stride'])}"
               f"p{int(conv['pad'])}")
    return "fit" if zlib.crc32(key.encode()) % 2 == 0 else "validate"


def row_split(row: dict[str, Any]) -> str:
    """A measured row's half: by its convolution geometry where it has one, else by (N, K)."""
    return conv_split_of(row["conv"]) if row.get("conv") else split_of(row["n"], row["k"])


# --- machine identity and thread control --------------------------------------------------------


def _openblas() -> tuple[ctypes.CDLL | None, str]:
    """The OpenBLAS library numpy loaded (via /proc/self/maps) and its symbol prefix/suffix."""
    try:
        libs = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "openblas" in ln.lower()
                       and ln.split()[-1].startswith("/")})
    except OSError:
        return None, ""
    for path in libs:
        lib = ctypes.CDLL(path)
        for pre, suf in (("scipy_", "64_"), ("", "64_"), ("", ""), ("scipy_", "")):
            if hasattr(lib, f"{pre}openblas_set_num_threads{suf}"):
                return lib, f"{pre}|{suf}"
    return None, ""


def blas_set_threads(n: int) -> dict[str, Any]:
    """Fix numpy's BLAS thread count (threadpoolctl if installed, else the OpenBLAS C API)."""
    info: dict[str, Any] = {"requested_threads": n}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(n, user_api="blas")
        info["threadpoolctl"] = threadpool_info()
        return info
    except ImportError:
        info["threadpoolctl"] = "not installed"
    lib, fix = _openblas()
    if lib is None:
        info["openblas"] = "not found"
        return info
    pre, suf = fix.split("|")
    getattr(lib, f"{pre}openblas_set_num_threads{suf}")(ctypes.c_int(n))
    for what in ("get_config", "get_corename"):
        f = getattr(lib, f"{pre}openblas_{what}{suf}", None)
        if f is not None:
            f.restype = ctypes.c_char_p
            info[f"openblas_{what}"] = f().decode()
    f = getattr(lib, f"{pre}openblas_get_num_threads{suf}", None)
    if f is not None:
        info["openblas_threads"] = int(f())
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def caches() -> list[dict[str, Any]]:
    """Cache levels of cpu0 from /sys (level, type, size, sharing)."""
    out = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        size = _read(str(d / "size"))
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        out.append({"level": int(_read(str(d / "level")) or 0), "type": _read(str(d / "type")),
                    "size_bytes": int(size[:-1] if size[-1:] in "KMG" else size or 0) * mult,
                    "shared_cpu_list": _read(str(d / "shared_cpu_list")),
                    "line_bytes": int(_read(str(d / "coherency_line_size")) or 0)})
    return out


def machine_identity(blas: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU model, ISA flags, cores, caches, library versions, thread settings, load."""
    import numba

    cpuinfo = _read("/proc/cpuinfo")
    field = {}
    for line in cpuinfo.splitlines():
        if ":" in line:
            key, _, val = line.partition(":")
            field.setdefault(key.strip(), val.strip())
    flags = field.get("flags", "").split()
    simd = [f for f in flags if f.startswith(("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve",
                                              "neon", "fphp", "asimddp", "bf16", "i8mm"))]
    blas_cfg = {}
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]
        blas_cfg = {k: deps["blas"].get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:  # pragma: no cover - numpy without show_config dicts
        pass
    return {
        "type": "machine",
        "cpu_model": field.get("model name", platform.processor()),
        "vendor": field.get("vendor_id", ""), "cpu_family": field.get("cpu family", ""),
        "cpu_mhz_nominal": float(field.get("cpu MHz", 0) or 0),
        "hypervisor": "hypervisor" in flags,
        "simd_flags": simd, "n_flags": len(flags),
        "logical_cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
        "caches": caches(),
        "mem_total_kb": int((_read("/proc/meminfo").split()[1:2] or ["0"])[0]),
        "kernel": platform.release(), "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(), "numba_threading_layer": _threading_layer(),
        "blas_build": blas_cfg, "blas_runtime": blas or {},
        "env": {k: os.environ.get(k) for k in _USER_ENV},
        "env_set_by_user": {k: v is not None for k, v in _USER_ENV.items()},
        "openblas_coretype_set": _USER_ENV["OPENBLAS_CORETYPE"] is not None,
        "loadavg": _read("/proc/loadavg"),
    }


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return "unset"


def pin(core: int, threads: int = 1) -> dict[str, Any]:
    """Pin this process to one core, numba and BLAS to `threads` threads."""
    import numba

    if core >= 0:
        os.sched_setaffinity(0, {core})
    numba.set_num_threads(threads)
    return blas_set_threads(threads)


# --- timing --------------------------------------------------------------------------------------


def time_call(fn: Callable[[int], Any], n_rot: int, min_s: float = MIN_POINT_S,
              max_s: float = MAX_POINT_S) -> dict[str, Any]:
    """Median time of fn(i) (i rotates over n_rot operand copies): warm-up, then repeats
    until >= min_s of measured time and >= 10 repeats (>= 5 when one call is slow)."""
    for i in range(min(3, n_rot) or 1):  # warm-up (JIT already compiled; first-touch pages)
        fn(i % n_rot)
    times: list[int] = []
    spent = 0
    i = 0
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        fn(i % n_rot)
        dt = time.perf_counter_ns() - t0
        times.append(dt)
        spent += dt
        i += 1
        need = 5 if dt > 50e6 else 10
        if (spent >= min_s * 1e9 and len(times) >= need) or time.perf_counter() - t_start > max_s \
                and len(times) >= 3:
            break
    a = np.array(times, dtype=np.float64) / 1e9
    q = np.percentile(a, [10, 25, 50, 75, 90])
    return {"t_median_s": float(q[2]), "t_min_s": float(a.min()), "t_p10_s": float(q[0]),
            "t_p25_s": float(q[1]), "t_p75_s": float(q[3]), "t_p90_s": float(q[4]), "repeats": len(a),
            "spread": float((q[3] - q[1]) / q[2]) if q[2] > 0 else 0.0}


# --- probe ---------------------------------------------------------------------------------------


def _probe_kernels():
    from numba import njit

    @njit(fastmath=True, cache=True)
    def read_sum(a, reps):  # vectorised reduction: streams a reps times
        s = np.float32(0.0)
        for _ in range(reps):
            for i in range(a.size):
                s += a[i]
        return s

    @njit(fastmath=True, cache=True)
    def axpy(y, x, v, reps):  # y += v*x, y and x in L1: the inner loop of every SpMM here
        for _ in range(reps):
            for i in range(y.size):
                y[i] += v * x[i]

    @njit(cache=True)
    def chain2(n, c):  # dependent integer add + xor: 2 cycles per iteration (1-cycle ALU latency)
        x = np.int64(1)
        for i in range(n):
            x = (x + i) ^ c
        return x

    @njit(cache=True)
    def chain3(n, c):  # dependent add + xor + add: 3 cycles per iteration
        x = np.int64(1)
        for i in range(n):
            x = ((x + i) ^ c) + c
        return x

    return read_sum, axpy, chain2, chain3


def probe(out_dir: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure this core: DRAM / L3 / L2 read bandwidth, L1 axpy rate, dense sgemm FLOP rate."""
    read_sum, axpy, chain2, chain3 = _probe_kernels()
    rng = np.random.default_rng(0)
    small = rng.random(1024, dtype=np.float32)
    read_sum(small, 1)
    axpy(small.copy(), small, np.float32(0.5), 1)
    chain2(10, 5)
    chain3(10, 5)
    res: dict[str, Any] = {"type": "probe", "loadavg_before": _read("/proc/loadavg")}
    # A probe measures a capability (a peak rate): other tenants only ever slow a repeat down,
    # so each rate comes from the fastest of many short repeats (each well under a scheduler
    # time slice); the median is kept alongside.
    # core clock from dependency chains of 1-cycle integer ops (add, xor: latency 1 on x86-64
    # and AArch64 cores); two chain lengths must agree, else the clock moved during the probe
    n_iter = 2_000_000
    for name, fn, dep in (("chain2", chain2, 2), ("chain3", chain3, 3)):
        r = time_call(lambda i, fn=fn: fn(n_iter, 12345), 1, min_s=0.5)
        res[f"clock_hz_{name}"] = n_iter * dep / r["t_min_s"]
        res[f"clock_hz_{name}_median"] = n_iter * dep / r["t_median_s"]
    res["clock_hz"] = (res["clock_hz_chain2"] + res["clock_hz_chain3"]) / 2
    sizes = {"l2": 256 * 2**10, "l3": 8 * 2**20, "dram": (64 if quick else 256) * 2**20}
    for level, nbytes in sizes.items():
        a = rng.random(nbytes // 4, dtype=np.float32)
        reps = max(1, int(4 * 2**20 // nbytes)) if level != "dram" else 1
        if level == "dram":  # stream the big array in 4 MiB pieces (short repeats, cold lines)
            piece = 2**20
            r = time_call(lambda i, a=a, p=piece: read_sum(a[(i % 64) * p:(i % 64 + 1) * p], 1), 64, min_s=0.5)
            got = piece * 4
        else:
            r = time_call(lambda i, a=a, reps=reps: read_sum(a, reps), 1, min_s=0.3)
            got = nbytes * reps
        res[f"{level}_read_bytes_per_s"] = got / r["t_min_s"]
        res[f"{level}_read_bytes_per_s_median"] = got / r["t_median_s"]
        res[f"{level}_read_spread"] = r["spread"]
    y = rng.random(512, dtype=np.float32)  # 2 KiB + 2 KiB: L1 resident
    x = rng.random(512, dtype=np.float32)
    reps = 1000
    r = time_call(lambda i: axpy(y, x, np.float32(1e-7), reps), 1, min_s=0.3)
    res["l1_axpy_elems_per_s"] = 512 * reps / r["t_min_s"]
    n = 256 if quick else 512
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    r = time_call(lambda i: np.matmul(a, b, out=c), 1, min_s=0.5)
    res["sgemm_n"] = n
    res["sgemm_flops_per_s"] = 2 * n**3 / r["t_min_s"]
    res["sgemm_flops_per_s_median"] = 2 * n**3 / r["t_median_s"]
    res["sgemm_spread"] = r["spread"]
    res["loadavg_after"] = _read("/proc/loadavg")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"probe-{_stamp()}.json"
        path.write_text(json.dumps({**res, "machine": machine_identity()}, indent=1))
        res["file"] = str(path)
    return res


# --- the grid ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    kernel: str
    m: int
    n: int
    k: int
    pattern: dict[str, Any]
    layer: str
    activation_density: float = 1.0
    # a convolution's (C_in, H = W, k, stride, pad): depthwise for cpu_dwconv, else dense with C_out = n; None: a GEMM
    conv: tuple[int, int, int, int, int] | None = None

    @property
    def conv_dict(self) -> dict[str, int] | None:
        if self.conv is None:
            return None
        c, h, k, stride, pad = self.conv
        geom = {"c": c, "h": h, "w": h, "kh": k, "kw": k, "stride": stride, "pad": pad}
        if self.kernel != "cpu_dwconv":
            geom.update(c_out=self.n, groups=1)
        return geom


TABLES = {  # the layer tables a campaign can measure (--tables), by name
    "networks": (("mobilenet_v1", MOBILENET_V1_1X1), ("mobilenet_v2", MOBILENET_V2_1X1), ("resnet50", RESNET50_1X1)),
    "regimes": (("regimes", REGIME_1X1),),
    "new_layers": (("new_layers", NEW_1X1),),
    "new_layers2": (("new_layers2", NEW2_1X1),),
    "new_layers3": (("new_layers3", NEW3_1X1),),
    "new_layers4": (("new_layers4", NEW4_1X1),),
    "new_layers5": (("new_layers5", NEW5_1X1),),
    "new_layers6": (("new_layers6", NEW6_1X1),),
    "new_layers7": (("new_layers7", NEW7_1X1),),
    "new_layers8": (("new_layers8", NEW8_1X1),),
    "new_layers9": (("new_layers9", NEW9_1X1),),
    "new_layers10": (("new_layers10", NEW10_1X1),),
    "new_layers11": (("new_layers11", NEW11_1X1),),
    "new_layers12": (("new_layers12", NEW12_1X1),),
    "new_layers13": (("new_layers13", NEW13_1X1),),
    "new_layers14": (("new_layers14", NEW14_1X1),),
    "new_layers15": (("new_layers15", NEW15_1X1),),
    "new_layers16": (("new_layers16", NEW16_1X1),),
    "new_layers17": (("new_layers17", NEW17_1X1),),
    "depthwise": (("depthwise", DEPTHWISE),),  # (C, H, k, stride) depthwise convolutions, not 1x1 layers
    "convs": (("convs", DENSE_CONVS),),  # (C_in, H, C_out, k, stride, pad) dense KxK convolutions, im2col + BLAS
}


def grid(quick: bool = False, regimes: bool = False, new_layers: bool = False,
         tables: tuple[str, ...] | None = None) -> list[Point]:
    """Every point of the campaign (quick: a few shapes, for smoke tests). `tables` names the
    layer tables (TABLES; default: "networks", which also brings the LLM shapes); `regimes` /
    `new_layers` are shorthands for the REGIME_1X1 / NEW_1X1 table alone."""
    if tables is None:
        tables = ("regimes",) if regimes else ("new_layers",) if new_layers else ("networks",)
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise ValueError(f"tables: got {', '.join(unknown) or 'none'}; allowed: {', '.join(TABLES)}")
    cnn: list[tuple[str, tuple[int, int, int]]] = []
    pts: list[Point] = []
    for t in tables:
        if t == "depthwise":
            pts += depthwise_points(quick)
            continue
        if t == "convs":
            pts += dense_conv_points(quick)
            continue
        for name, table in TABLES[t]:
            cnn += [(name, s) for s in table]
    if quick and cnn:
        cnn = [cnn[2], cnn[8], cnn[13]]
    seen = set()
    for layer, (cin, cout, hw) in cnn:
        if (cin, cout, hw) in seen:
            continue
        seen.add((cin, cout, hw))
        m, n, k = hw, cout, cin
        dens = DENSITIES[::2] if quick else DENSITIES
        pts.append(Point("cpu_dense_gemm", m, n, k, {"pattern": "dense"}, layer))
        for d in dens:
            pts.append(Point("cpu_csr", m, n, k, {"pattern": "unstructured", "density": d}, layer))
            pts.append(Point("cpu_bitmap", m, n, k, {"pattern": "unstructured", "density": d}, layer))
        for bh, bw in BLOCKS:
            if n % bh or k % bw:
                continue
            for d in (BLOCK_DENSITIES[::2] if quick else BLOCK_DENSITIES):
                pts.append(Point("cpu_bsr", m, n, k, {"pattern": "block", "block": [bh, bw], "density": d},
                                 layer))
        for nn, mm in NM_PATTERNS:
            if k % mm == 0:
                pts.append(Point("cpu_nm", m, n, k, {"pattern": f"{nn}:{mm}"}, layer))
    only_cnn = "networks" not in tables
    llm_spmm = [] if only_cnn else LLM_SPMM[:1] if quick else LLM_SPMM
    for k, n, tokens in llm_spmm:
        pts.append(Point("cpu_dense_gemm", tokens, n, k, {"pattern": "dense"}, "llama-2"))
        for d in (LLM_DENSITIES[::2] if quick else LLM_DENSITIES):
            pts.append(Point("cpu_csr", tokens, n, k, {"pattern": "unstructured", "density": d}, "llama-2"))
    for k, n in ([] if only_cnn else LLM_GEMV[:1] if quick else LLM_GEMV):
        pts.append(Point("cpu_dense_gemm", 1, n, k, {"pattern": "dense"}, "llama-2-decode"))
        for a in ACT_DENSITIES:
            pts.append(Point("cpu_act_gemv", 1, n, k, {"pattern": "dense"}, "llama-2-decode", a))
    return pts


def _conv_point(kernel: str, layer: str, c: int, h: int, c_out: int, k: int, stride: int, pad: int,
                groups: int = 1) -> Point:
    """A convolution's point at its GEMM view (ConvGeom.gemm_view, the rule calibrate_cpu.row_op prices by)."""
    from simsparse.core.ops import ConvGeom

    m, n, kk, _ = ConvGeom(1, c, h, h, c_out, k, k, stride, pad, groups=groups).gemm_view()
    return Point(kernel, m, n, kk, {"pattern": "dense"}, layer, conv=(c, h, k, stride, pad))


def depthwise_points(quick: bool = False) -> list[Point]:
    """One cpu_dwconv point per DEPTHWISE layer (dense fp32; GEMM view M = output pixels, N = 1, K = k*k)."""
    return [_conv_point("cpu_dwconv", "depthwise", c, h, c, k, stride, k // 2, groups=c)
            for c, h, k, stride in (DEPTHWISE[::17] if quick else DEPTHWISE)]


def dense_conv_points(quick: bool = False) -> list[Point]:
    """One cpu_dense_gemm point per DENSE_CONVS layer (GEMM view M = output pixels, N = C_out, K = C_in*k*k)."""
    return [_conv_point("cpu_dense_gemm", "convs", c, h, n, k, stride, pad)
            for c, h, n, k, stride, pad in (DENSE_CONVS[::11] if quick else DENSE_CONVS)]


def _llc_bytes() -> int:
    sizes = [c["size_bytes"] for c in caches() if c["type"] in ("Unified", "Data")]
    return max(sizes) if sizes else 32 * 2**20


def _copy(obj: Any) -> Any:
    """A deep copy of an encoded operand (fresh arrays, so a rotation copy is cold in cache)."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: getattr(obj, f.name).copy() for f in dataclasses.fields(obj)
                                           if isinstance(getattr(obj, f.name), np.ndarray)})
    return obj.copy()


ROTATION_CAP = 32  # operand copies a point rotates over, at most (the default protocol)
COLD_ROTATION_CAP = 4096  # with --cold: enough copies that even the smallest layer's set is 2x the LLC


def build(pt: Point, seed: int = 0, cold: bool = False, copies: int | None = None,
          mb: int | None = None) -> tuple[Callable[[int], Any], int, dict[str, Any]]:
    """Operands for one point rotated over enough copies; returns (call(i), copies, facts).

    Default: at most ROTATION_CAP copies of one encoded weight (a small layer's whole rotation can
    then stay in the LLC, and a branchy kernel sees the same mask every call). ``cold``: copies up
    to twice the LLC whatever the layer's size, each copy a different mask of the same pattern
    (as the layers of a network are), so no call finds its operands cached or its branch
    sequence learned from the call before. `copies` fixes the rotation (the state probe's sweep);
    `mb` the pixel block (default: the mapper's, ``mappers.cpu.numba_block``)."""
    cap = COLD_ROTATION_CAP if cold else ROTATION_CAP
    from mappers.cpu import numba_block
    from simsparse.core.sparsity import parse_pattern
    from simsparse.kernels import cpu as K

    rng = np.random.default_rng(seed)
    m, n, k = pt.m, pt.n, pt.k
    l2 = next((c["size_bytes"] for c in caches() if c["level"] == 2), 2**20)
    facts: dict[str, Any] = {}
    if pt.kernel == "cpu_act_gemv" or (pt.kernel == "cpu_dense_gemm" and m == 1):
        w = rng.standard_normal((n, k), dtype=np.float32)
        x = rng.standard_normal(k, dtype=np.float32)
        if pt.kernel == "cpu_act_gemv":
            # rotated activations have disjoint nonzero columns, so each call reads weight
            # rows that the previous calls did not bring into the LLC
            op_w, fn = np.ascontiguousarray(w.T), K.act_sparse_gemv
            per = max(1, int(round(pt.activation_density * k)))
            n_x = int(min(32, max(1, k // per)))
            perm = rng.permutation(k)
            xs = []
            for j in range(n_x):
                xj = np.zeros(k, np.float32)
                cols = perm[j * per:(j + 1) * per]
                xj[cols] = rng.standard_normal(cols.size, dtype=np.float32)
                xs.append(xj)
            x = xs[0]
            facts["act_nnz"] = int(np.count_nonzero(x))
            touched = op_w.nbytes * min(1.0, n_x * per / k)
            w_copies = int(min(4, max(1, -(-2 * _llc_bytes() // max(touched, 1)))))
            ws_base = [op_w] + [op_w.copy() for _ in range(w_copies - 1)]
            copies = n_x * w_copies
            ws = [ws_base[j // n_x] for j in range(copies)]
            xs = [xs[j % n_x] for j in range(copies)]
            facts["act_rotation"] = {"x_sets": n_x, "w_copies": w_copies}
        else:
            op_w, fn = w, K.dense_gemv
            set_bytes = op_w.nbytes + x.nbytes + 4 * n
            copies = int(min(cap, max(1, -(-2 * _llc_bytes() // set_bytes))))
            ws = [op_w] + [op_w.copy() for _ in range(copies - 1)]
            xs = [x] + [x.copy() for _ in range(copies - 1)]
        ref = w @ x
        ys = [np.empty(n, np.float32) for _ in range(copies)]
        got = fn(ws[0], xs[0], out=ys[0])
        facts.update(mb=0, weight_bytes=int(op_w.nbytes))
        facts["rel_err"] = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
        return (lambda i: fn(ws[i], xs[i], out=ys[i])), copies, facts
    if pt.kernel == "cpu_dwconv":
        c, h, kk, stride, pad = pt.conv
        x = rng.standard_normal((c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, kk, kk), dtype=np.float32)
        ref = K.depthwise_reference(w, x, stride, pad)
        set_bytes = x.nbytes + 4 * c * pt.m + w.nbytes
        if copies is None:
            copies = int(min(cap, max(1, -(-2 * _llc_bytes() // set_bytes))))
        ws = [w] + [w.copy() for _ in range(copies - 1)]
        xs = [x] + [x.copy() for _ in range(copies - 1)]
        ys = [np.empty_like(ref, dtype=np.float32) for _ in range(copies)]
        got = K.depthwise_conv2d(ws[0], xs[0], stride, pad, out=ys[0])
        facts.update(mb=0, weight_bytes=int(w.nbytes))
        facts["rel_err"] = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
        return (lambda i: K.depthwise_conv2d(ws[i], xs[i], stride, pad, out=ys[i])), copies, facts
    if pt.kernel == "cpu_dense_gemm" and pt.conv is not None:
        c, h, kk, stride, pad = pt.conv
        x = rng.standard_normal((c, h, h), dtype=np.float32)
        w = rng.standard_normal((n, c, kk, kk), dtype=np.float32)
        ref = K.conv2d_reference(w, x, stride, pad).reshape(n, m)
        set_bytes = x.nbytes + 4 * n * m + w.nbytes
        if copies is None:
            copies = int(min(cap, max(1, -(-2 * _llc_bytes() // set_bytes))))
        ws = [w] + [w.copy() for _ in range(copies - 1)]
        xs = [x] + [x.copy() for _ in range(copies - 1)]
        ys = [np.empty((n, m), np.float32) for _ in range(copies)]
        got = K.conv2d_im2col(ws[0], xs[0], stride, pad, out=ys[0])
        facts.update(mb=0, weight_bytes=int(w.nbytes))
        facts["rel_err"] = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
        # the column copy alone, timed beside the whole call (measure_point): the im2col term's own data
        facts["_part"] = ("im2col", lambda i: K.im2col(xs[i], kk, kk, stride, pad))
        return (lambda i: K.conv2d_im2col(ws[i], xs[i], stride, pad, out=ys[i])), copies, facts
    spars = parse_pattern(pt.pattern)
    dense = pt.pattern["pattern"] == "dense"
    mask = spars.mask((n, k), seed) if not dense else np.ones((n, k), bool)
    wd = (mask * rng.standard_normal((n, k))).astype(np.float32)
    x = rng.standard_normal((k, m), dtype=np.float32)
    mb = mb or numba_block(m, k, 4, l2, 1)
    if pt.kernel not in K.SPMM_KERNELS:
        raise ValueError(f"kernel: got {pt.kernel!r}; allowed: cpu_dense_gemm, cpu_csr, cpu_bitmap, "
                         "cpu_bsr, cpu_nm, cpu_act_gemv, cpu_dwconv")
    encode = K.encoder(pt.kernel, spars)
    if pt.kernel == "cpu_dense_gemm":
        mb = 0
    enc = encode(wd)
    facts["weight_bytes"] = int(enc.nbytes)
    if pt.kernel != "cpu_dense_gemm":
        facts["nnz"] = int(np.count_nonzero(wd))
    ref = wd @ x
    set_bytes = x.nbytes + 4 * n * m + facts["weight_bytes"]
    if copies is None:
        copies = int(min(cap, max(1, -(-2 * _llc_bytes() // set_bytes))))
    if cold and not dense:  # a different mask of the same pattern per copy (copy 0 is checked)
        encs = [enc] + [encode((spars.mask((n, k), seed + 1 + j) * rng.standard_normal((n, k))).astype(np.float32))
                        for j in range(copies - 1)]
        facts["distinct_masks"] = True
    else:
        encs = [enc] + [_copy(enc) for _ in range(copies - 1)]
    xs = [x] + [x.copy() for _ in range(copies - 1)]
    ys = [np.empty((n, m), np.float32) for _ in range(copies)]
    runs = [K.runner(pt.kernel, e, mb) for e in encs]  # a bitmap's row starts: once per encoding, not timed
    fn_i = lambda i: runs[i](xs[i], ys[i])  # noqa: E731
    got = fn_i(0)
    facts["rel_err"] = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    facts["mb"] = int(mb)
    return fn_i, copies, facts


def warm_up() -> None:
    """Compile every kernel once on tiny operands (JIT time is never measured)."""
    for pt in [
        Point("cpu_csr", 20, 8, 16, {"pattern": "unstructured", "density": 0.5}, "warm"),
        Point("cpu_bitmap", 20, 8, 16, {"pattern": "unstructured", "density": 0.5}, "warm"),
        Point("cpu_bsr", 20, 8, 16, {"pattern": "block", "block": [4, 1], "density": 0.5}, "warm"),
        Point("cpu_nm", 20, 8, 16, {"pattern": "2:4"}, "warm"),
        Point("cpu_act_gemv", 1, 8, 16, {"pattern": "dense"}, "warm", 0.5),
        Point("cpu_dense_gemm", 20, 8, 16, {"pattern": "dense"}, "warm"),
        Point("cpu_dwconv", 16, 1, 9, {"pattern": "dense"}, "warm", conv=(4, 8, 3, 2, 1)),
        Point("cpu_dwconv", 64, 1, 25, {"pattern": "dense"}, "warm", conv=(4, 8, 5, 1, 2)),
        Point("cpu_dense_gemm", 16, 4, 18, {"pattern": "dense"}, "warm", conv=(2, 8, 3, 2, 1)),
    ]:
        fn, _, _ = build(pt)
        fn(0)


def measure_point(pt: Point, seed: int = 0, builds: int = 1, cold: bool = False,
                  copies: int | None = None, mb: int | None = None) -> dict[str, Any]:
    """One point. With ``builds`` > 1 the operands are allocated afresh that many times and each
    allocation timed on its own; the row's times are those of the median allocation (where
    the pages of an operand land moves memory-bound kernels by 5-20 % on this VM; the
    per-allocation medians are kept in ``t_builds_s``)."""
    load0 = _read("/proc/loadavg")
    runs = []
    for _ in range(max(1, builds)):
        fn, n_rot, facts = build(pt, seed, cold=cold, copies=copies, mb=mb)
        part = facts.pop("_part", None)
        if part is not None:  # a named piece of the call, timed on its own just before it (same operands)
            name, fn_part = part
            facts[f"t_{name}_median_s"] = time_call(fn_part, n_rot)["t_median_s"]
        runs.append((time_call(fn, n_rot), n_rot, facts))
        del fn, part
    runs.sort(key=lambda x: x[0]["t_median_s"])
    r, n_rot, facts = runs[len(runs) // 2]
    if builds > 1:
        r = {**r, "builds": len(runs), "t_builds_s": [x[0]["t_median_s"] for x in runs]}
    row = {"type": "point", "kernel": pt.kernel, "m": pt.m, "n": pt.n, "k": pt.k, "dtype": "fp32",
           "weight": pt.pattern, "activation_density": pt.activation_density, "layer": pt.layer,
           "mapping": {"kernel": pt.kernel, "tile": [facts.get("mb", 0), pt.n, pt.k], "threads": 1},
           "split": row_split({"n": pt.n, "k": pt.k, "conv": pt.conv_dict}),
           **({"conv": pt.conv_dict, "batch": pt.conv[0]} if pt.conv else {}), "rotation_copies": n_rot, **facts, **r,
           "loadavg_before": load0, "loadavg_after": _read("/proc/loadavg"), "pid": os.getpid(),
           "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if facts["rel_err"] > 1e-4:
        row["error"] = f"wrong result: relative error {facts['rel_err']:.2e} vs the dense product"
    return row


def _stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# The machine-state probe (--state-probe): two fit-half layers timed over a fixed sweep of rotation
# copies at the start and at the end of a campaign. How much of a rotation this VM's share of the
# shared L3 keeps, and how fast its share of DRAM streams, drift with the host's other tenants from
# one session to the next (validation/data/cpu-host/README.md, campaign 9): the sweep records the
# state the campaign was measured in. Its rows are kept apart (split "state", type "state").
STATE_PROBE = (Point("cpu_csr", 784, 32, 144, {"pattern": "unstructured", "density": 0.2}, "state"),
               Point("cpu_csr", 49, 320, 960, {"pattern": "unstructured", "density": 0.1}, "state"))
STATE_COPIES = (2, 4, 8, 16, 32, 64, 128)


def state_probe(when: str) -> list[dict[str, Any]]:
    """One pass of the state probe: every STATE_PROBE layer at every STATE_COPIES rotation."""
    out = []
    for pt in STATE_PROBE:
        for c in STATE_COPIES:
            row = measure_point(pt, copies=c)
            out.append({**row, "type": "state", "split": "state", "state_when": when})
    return out


def _measure_pass(pts: list[Point], order: list[int], builds: int, cold: bool, deadline: float,
                  probe_before: str | None = None, probe_after: str | None = None,
                  fixed: dict[int, dict[str, int]] | None = None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """One pass: ("state", -1, row) for the probe rows, ("point", i, row) for pts[i] in `order`,
    until the wall-clock `deadline` (time.time()) passes. `fixed`: per point index, the rotation
    (`copies`) and pixel block (`mb`) to time it at instead of today's rules (a completion pass)."""
    if probe_before:
        for row in state_probe(probe_before):
            yield "state", -1, row
    for i in order:
        if time.time() > deadline:
            return
        yield "point", i, measure_point(pts[i], builds=builds, cold=cold, **(fixed or {}).get(i, {}))
    if probe_after:
        for row in state_probe(probe_after):
            yield "state", -1, row


def _pass_child(conn: Any, core: int, *args: Any) -> None:
    """A pass in a fresh process (spawned): pin, compile, measure, send every item, then None."""
    try:
        pin(core)
        warm_up()
        for item in _measure_pass(*args):
            conn.send(item)
    finally:
        conn.send(None)
        conn.close()


def _run_pass(fresh: bool, core: int, *args: Any) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """_measure_pass here, or (`fresh`) in a newly spawned process, so that a point's two passes sample
    two process states: within one process a point's timings agree to ~1 % even on freshly placed
    operands, while two processes can differ by 10-80 % on it (cause not pinned down; neither the
    operands' memory nor the kernels' code alignment: validation/data/cpu-host/README.md, campaign 14)."""
    if not fresh:
        yield from _measure_pass(*args)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_pass_child, args=(send, core, *args))
    child.start()
    send.close()
    try:
        while True:
            try:
                item = recv.recv()
            except EOFError:  # the child died: what it sent is kept
                break
            if item is None:
                break
            yield item
    finally:
        child.join()


def campaign_estimate_s(points: int, builds: int, parts: int = 0) -> float:
    """Seconds a campaign of `points` takes, both passes: ~MIN_POINT_S of timing per allocation plus
    ~0.15 s of set-up, per point and pass (campaigns 15-18: estimate 576 s, wall 529 s for 384 points);
    `parts` of the points also time a piece of their call on its own (a dense convolution's column copy:
    another MIN_POINT_S per allocation; campaign 32, 43 such points, wall 133 s)."""
    return 2 * ((points + parts) * max(1, builds) * MIN_POINT_S + points * 0.15)


def default_budget_s(points: int, builds: int, parts: int = 0) -> float:
    """The budget when none is given: room for both passes (1.5x the estimate, + 60 s for the probes)."""
    return 1.5 * campaign_estimate_s(points, builds, parts) + 60.0


def run(out_dir: Path, quick: bool = False, core: int = 1, budget_s: float | None = None,
        log: Callable[[str], None] = print, builds: int = 1, cold: bool = False, regimes: bool = False,
        new_layers: bool = False, tables: tuple[str, ...] | None = None, shuffle: int | None = None,
        with_state: bool = False, fresh_process: bool = True) -> Path:
    """The whole campaign → one new JSON-lines file under out_dir (append-only history).

    `shuffle` = a seed: the points are measured in that seeded random order (fit and held-out
    shapes, and the tables, interleaved in time, so that a drift of the machine hits both halves
    alike); the second pass runs in the reverse order. `with_state`: the state probe before the
    first and after the second pass. `fresh_process`: each pass runs in its own newly spawned
    process (see _run_pass); False = both in this one (the protocol of campaigns 1-14). `budget_s`: no
    new point starts after it (None: 1.5x the campaign's time estimate + 60 s, so both passes finish)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blas = pin(core)
    path = out_dir / f"kernels-{_stamp()}{'-quick' if quick else ''}.jsonl"
    t_start = time.perf_counter()
    t_wall = time.time()
    warm_up()
    pr = probe(out_dir, quick=quick)
    ident = machine_identity(blas)
    pts = grid(quick, regimes, new_layers, tables)
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(len(pts))
        pts = [pts[i] for i in order]
    parts = sum(1 for p in pts if p.kernel == "cpu_dense_gemm" and p.conv is not None)  # build(): "_part"
    estimate = campaign_estimate_s(len(pts), builds, parts)
    if budget_s is None:
        budget_s = default_budget_s(len(pts), builds, parts)
    deadline = t_wall + budget_s
    log(f"{len(pts)} points x 2 passes: about {estimate:.0f} s; budget {budget_s:.0f} s"
        + (" -- too short: the second pass will stop early (raise --budget-s)" if estimate > budget_s else ""))
    with path.open("w") as f:
        f.write(json.dumps({**ident, "campaign": path.stem, "probe": pr, "points": len(pts),
                            "threads": 1, "core": core, "builds": builds, "cold": cold,
                            "regimes": regimes, "new_layers": new_layers, "tables": list(tables or ()),
                            "shuffle": shuffle, "state_probe": with_state,
                            "fresh_process_per_pass": fresh_process}) + "\n")

        def emit(row: dict[str, Any]) -> None:  # every row goes to disk as it comes (a crash keeps the rest)
            f.write(json.dumps(row) + "\n")
            f.flush()

        first: dict[int, dict[str, Any]] = {}
        for kind, i, row in _run_pass(fresh_process, core, pts, list(range(len(pts))), builds, cold, deadline,
                                      "start" if with_state else None):
            if kind == "state":  # state_probe's rows carry their own type and split
                emit(row)
                continue
            row = {**row, "pass": 1}
            first[i] = row
            emit(row)
            pt = pts[i]
            log(f"[{len(first)}/{len(pts)}] {pt.kernel:15s} {pt.m}x{pt.n}x{pt.k} {json.dumps(pt.pattern)} "
                f"act={pt.activation_density}: {row['t_median_s'] * 1e6:9.1f} us "
                f"(spread {row['spread']:.2f}, n={row['repeats']}, load {row['loadavg_before'].split()[0]})")
        if len(first) < len(pts):
            log(f"budget of {budget_s:.0f} s spent after {len(first)} of {len(pts)} points")
        # second pass, in reverse order (a different moment for every point) and, with
        # `fresh_process`, in another process (a different process state): other tenants' load and an
        # unlucky process state only ever add time, so the run with the lower median is kept (both recorded)
        log(f"second pass over {len(first)} points")
        done = 0
        for kind, i, new in _run_pass(fresh_process, core, pts, sorted(first, reverse=True), builds, cold, deadline,
                                      None, "end" if with_state else None):
            if kind == "state":
                emit(new)
                continue
            emit({**kept_of_two(first[i], {**new, "pass": 2}), "type": "remeasure"})
            done += 1
        if done < len(first):
            log(f"budget spent; second pass stopped with {len(first) - done} points left")
        f.write(json.dumps({"type": "end", "wall_s": time.perf_counter() - t_start,
                            "loadavg": _read("/proc/loadavg")}) + "\n")
    log(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")
    return path


def complete(campaign: Path, core: int = 1, budget_s: float | None = None,
             log: Callable[[str], None] = print, with_state: bool = True) -> Path:
    """The missing second pass of a campaign whose budget ran out (or that ran one pass by design):
    every point of `campaign` measured once is timed again, in reverse measuring order, in one freshly
    spawned process, with the campaign's own builds, cold flag, rotation and pixel block, so that the
    quality rule can screen it like every two-pass point. Rows go to a new file
    ``pass2-<campaign>-<stamp>.jsonl`` beside it (the campaign file stays as measured: append-only);
    `load_rows` folds them in. Run again, it times only what an interrupted run left (`budget_s`: no
    new point after it; None: every point). A row whose build differs from the campaign's (SAME_BUILD) gets an error
    and is not used. `with_state`: the machine-state probe before the pass (today's state, on record)."""
    lines = [json.loads(x) for x in campaign.read_text().splitlines()]
    head = lines[0]
    firsts = [r for r in lines if r.get("type") == "point" and "error" not in r]
    twice = {point_key(r) for r in lines if r.get("type") == "remeasure"}
    twice |= {point_key(r) for _, r in completion_rows(campaign)}  # an earlier, interrupted completion
    todo = [r for r in firsts if point_key(r) not in twice][::-1]
    pts = [point_of(r) for r in todo]
    fixed = {i: {"copies": r["rotation_copies"], "mb": r.get("mb", 0) or None} for i, r in enumerate(todo)}
    builds, cold = int(head.get("builds") or 1), bool(head.get("cold"))
    blas = pin(core) if core >= 0 else None  # the pass itself runs pinned in its own process
    path = campaign.parent / f"pass2-{campaign.stem}-{_stamp()}.jsonl"
    t0 = time.perf_counter()
    deadline = time.time() + budget_s if budget_s is not None else float("inf")  # none: every point
    log(f"{campaign.stem}: {len(pts)} of {len(firsts)} points measured once"
        + (f"; budget {budget_s:.0f} s" if budget_s is not None else ""))
    with path.open("w") as f:
        f.write(json.dumps({**machine_identity(blas), "type": "machine", "completes": campaign.stem,
                            "points": len(pts), "builds": builds, "cold": cold, "core": core}) + "\n")
        done = bad = 0
        for kind, i, row in _run_pass(True, core, pts, list(range(len(pts))), builds, cold, deadline,
                                      "start" if with_state else None, None, fixed):
            if kind == "point":
                row = {**row, "type": "pass2", "pass": 2}
                diff = [k for k in SAME_BUILD if row.get(k) != todo[i].get(k)]
                if diff:
                    row["error"] = "build differs from the campaign's: " + ", ".join(
                        f"{k} {todo[i].get(k)} -> {row.get(k)}" for k in diff)
                    bad += 1
                done += 1
            f.write(json.dumps(row) + "\n")
            f.flush()
        f.write(json.dumps({"type": "end", "wall_s": time.perf_counter() - t0, "measured": done,
                            "build_mismatch": bad, "loadavg": _read("/proc/loadavg")}) + "\n")
    log(f"wrote {path}: {done} of {len(pts)} points ({bad} with a different build) in {time.perf_counter() - t0:.0f} s")
    return path


def kept_of_two(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A point's row from its two passes: other tenants and an unlucky process state only ever add
    time, so the pass with the lower median is kept; both medians, spreads and loads are recorded
    (`pass_diff` reads them for the quality rule)."""
    keep = new if new["t_median_s"] < old["t_median_s"] else old
    return {**keep, "remeasured": True, "t_median_first_s": old["t_median_s"],
            "t_median_second_s": new["t_median_s"], "spread_first": old["spread"],
            "spread_second": new["spread"], "loadavg_first": old["loadavg_before"],
            "loadavg_second": new["loadavg_before"]}


def point_key(row: dict[str, Any]) -> tuple:
    """What identifies a measured point within a campaign (kernel, shape, pattern, convolution)."""
    return (row["kernel"], row["m"], row["n"], row["k"], json.dumps(row["weight"], sort_keys=True),
            row["activation_density"], json.dumps(row.get("conv"), sort_keys=True))


def point_of(row: dict[str, Any]) -> Point:
    """The Point a measured row timed (the inverse of measure_point's row fields)."""
    conv = row.get("conv")
    return Point(row["kernel"], row["m"], row["n"], row["k"], row["weight"], row.get("layer", ""),
                 row["activation_density"],
                 (conv["c"], conv["h"], conv["kh"], conv["stride"], conv["pad"]) if conv else None)


# the facts of a built point that must agree between a campaign's row and its completion pass (the
# same operands, rotation and pixel block; else the second "pass" timed something else)
SAME_BUILD = ("rotation_copies", "mb", "weight_bytes", "nnz")


def completion_files(campaign: Path) -> list[Path]:
    """The completion passes (`complete`) of a campaign file, oldest first."""
    return sorted(campaign.parent.glob(f"pass2-{campaign.stem}-*.jsonl"))


def completion_rows(campaign: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, row) of every usable second-pass row of a campaign's completion files (no error)."""
    for c in completion_files(campaign):
        for line in c.read_text().splitlines():
            r = json.loads(line)
            if r.get("type") == "pass2" and "error" not in r:
                yield c.name, r


def load_rows(paths: list[Path] | Path | None = None) -> list[dict[str, Any]]:
    """Measured points of one or more campaign files (a re-measured point replaces its first row; a
    point measured once whose campaign was completed later (`complete`) takes its second pass from
    the completion file, by the same rule)."""
    if paths is None:
        paths = sorted(DEFAULT_OUT.glob("kernels-*.jsonl"))
    if isinstance(paths, Path | str):
        paths = [Path(paths)]
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        points: dict[tuple, dict[str, Any]] = {}
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if r.get("type") in ("point", "remeasure") and "error" not in r:
                points[point_key(r)] = {**r, "campaign": p.stem, "split": row_split(r)}
        for name, r in completion_rows(p):
            key = point_key(r)
            old = points.get(key)
            if old is not None and not old.get("remeasured"):
                points[key] = {**kept_of_two(old, r), "campaign": p.stem, "split": old["split"],
                               "second_pass_file": name}
        rows += list(points.values())
    return rows


def iter_files(out_dir: Path = DEFAULT_OUT) -> Iterator[Path]:
    yield from sorted(out_dir.glob("kernels-*.jsonl"))


def require_files(ap: argparse.ArgumentParser, flag: str, paths: list[Path], what: str = "file") -> None:
    """Stop with ap's usage error naming `flag` if any of `paths` is not a file (before any work starts)."""
    missing = [str(f) for f in paths if not Path(f).is_file()]
    if missing:
        ap.error(f"{flag}: no such {what}: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="simsparse measure --device cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON-lines files")
    ap.add_argument("--quick", action="store_true", help="a few shapes (smoke test, ~1 minute)")
    ap.add_argument("--probe-only", action="store_true", help="only the bandwidth / FLOP probe")
    ap.add_argument("--core", type=int, default=1, help="core to pin to (-1: no pinning)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting new points after this (default: 1.5x the time estimate + 60 s)")
    ap.add_argument("--builds", type=int, default=1,
                    help="allocate each point's operands this many times and keep the median allocation")
    ap.add_argument("--regimes", action="store_true",
                    help="measure the REGIME_1X1 layers only (shapes no network table has)")
    ap.add_argument("--new-layers", action="store_true",
                    help="measure the NEW_1X1 layers only (other networks' 1x1 convolutions)")
    ap.add_argument("--tables", default=None,
                    help=f"comma-separated layer tables to measure (allowed: {', '.join(TABLES)}; default: networks)")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="measure the points in this seeded random order (halves and tables interleaved in time)")
    ap.add_argument("--state-probe", action="store_true",
                    help="time the machine-state probe (rotation sweep of two layers) at the start and the end")
    ap.add_argument("--cold", action="store_true",
                    help="rotate over copies worth 2x the LLC for every layer, each with its own mask "
                         "(no cached operands, no learned branch sequence between calls)")
    ap.add_argument("--same-process", action="store_true",
                    help="run both passes in this process (the protocol of campaigns 1-14); default: each pass "
                         "in its own fresh process, so the two passes sample two process states")
    ap.add_argument("--complete", type=Path, action="append", default=[], metavar="CAMPAIGN",
                    help="time the missing second pass of this campaign file's points measured once (its "
                         "budget ran out) into pass2-<campaign>-<stamp>.jsonl beside it; repeatable")
    a = ap.parse_args(argv)
    if a.complete:
        require_files(ap, "--complete", a.complete, "campaign file")
        for c in a.complete:
            complete(c, core=a.core, budget_s=a.budget_s)
        return 0
    if a.probe_only:
        pin(a.core)
        print(json.dumps(probe(a.out, quick=a.quick), indent=1))
        return 0
    tables = tuple(t.strip() for t in a.tables.split(",") if t.strip()) if a.tables else None
    try:  # the grid's own check, before the machine is pinned and probed
        grid(tables=tables)
    except ValueError as e:
        ap.error(f"--{e}")
    run(a.out, quick=a.quick, core=a.core, budget_s=a.budget_s, builds=a.builds, cold=a.cold, regimes=a.regimes,
        new_layers=a.new_layers, tables=tables, shuffle=a.shuffle, with_state=a.state_probe,
        fresh_process=not a.same_process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
