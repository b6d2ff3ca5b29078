"""Pruners: magnitude masks for every sparsity pattern of simsparse.core.sparsity.

The mask logic is numpy (works without torch): each function takes a weight (its GEMM view
W[N, K], see workloads.detect.weight_matrix) and returns a boolean mask of the same shape,
True = kept. Every mask satisfies its pattern's validator (`pattern.check(mask) == []`).
Scores are |w| (or the L2 norm of a block / row / vector); ties are broken by position so
the result is deterministic and the kept count exact.

The torch side is thin: `torch_mask` turns a module's weight into a mask tensor shaped like
the weight, `prune_model` applies masks with `torch.nn.utils.prune.custom_from_mask`, which
leaves the `weight_mask` buffers that `workloads.from_module` reads back.

N:M masks are the magnitude masks SR-STE (Zhou et al., ICLR 2021) recomputes every step
(top-n |w| of each group of m along K); `transposable_nm` also keeps n:m along N, the
bidirectional mask of Hubara et al. (NeurIPS 2021) that keeps bwd_data (dX = dY·W) n:m.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from simsparse.core.errors import bad
from simsparse.core.sparsity import (
    NM,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    Sparsity,
    Unstructured,
    parse_pattern,
)
from workloads.detect import weight_matrix

METHODS = ("unstructured", "global", "nm", "transposable_nm", "block", "group", "channel",
           "constant_fan_in")


def _keep_count(size: int, density: float) -> int:
    if not 0 < density <= 1:
        raise bad("density", density, "a number in (0, 1]")
    return min(size, max(1, int(round(density * size))))


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of exactly `count` largest scores of a 1-D array (ties: deterministic)."""
    keep = np.zeros(scores.size, dtype=bool)
    if count >= scores.size:
        keep[:] = True
        return keep
    keep[np.argpartition(-scores, count - 1, kind="introselect")[:count]] = True
    return keep


def _score(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    return np.abs(w if w.dtype in (np.float32, np.float64) else w.astype(np.float64))


# --- numpy masks ----------------------------------------------------------------------------
def magnitude(w: np.ndarray, density: float) -> np.ndarray:
    """Layer-wise unstructured magnitude pruning: keep the round(density·size) largest |w|."""
    w = np.asarray(w)
    return _top(_score(w).ravel(), _keep_count(w.size, density)).reshape(w.shape)


def global_magnitude(weights: Mapping[str, np.ndarray], density: float) -> dict[str, np.ndarray]:
    """Global unstructured magnitude pruning: one |w| threshold over all layers together."""
    names = list(weights)
    flat = [np.asarray(weights[n]) for n in names]
    sizes = [f.size for f in flat]
    scores = np.concatenate([_score(f).ravel() for f in flat])
    keep = _top(scores, _keep_count(scores.size, density))
    out, start = {}, 0
    for n, f, s in zip(names, flat, sizes, strict=True):
        out[n] = keep[start:start + s].reshape(f.shape)
        start += s
    return out


def nm(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along K: in every group of m consecutive weights of a row keep the n largest |w|."""
    w2 = weight_matrix(w)
    rows, cols = w2.shape
    NM(n, m).bind(rows, cols)
    groups = _score(w2).reshape(rows, cols // m, m)
    if m <= 16:
        # rank of each element inside its group (descending |w|, ties → lower position first)
        rank = np.zeros(groups.shape, dtype=np.int16)
        for j in range(m):
            other = groups[:, :, j:j + 1]
            beats = other > groups
            beats[:, :, j + 1:] |= other == groups[:, :, j + 1:]
            rank += beats
        return (rank < n).reshape(np.shape(w))
    order = np.argsort(-groups, axis=2, kind="stable")[:, :, :n]
    mask = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(np.shape(w))


def _square_patterns(n: int, m: int) -> np.ndarray | None:
    """All m×m 0/1 matrices with exactly n ones in every row and column (None if too many)."""
    rows = [r for r in itertools.product((0, 1), repeat=m) if sum(r) == n]
    if len(rows) ** m > 200_000:
        return None
    cands = np.array(list(itertools.product(rows, repeat=m)), dtype=bool)  # (P, m, m)
    ok = cands.sum(axis=1) == n
    return cands[ok.all(axis=1)]


def transposable_nm(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along K *and* along N (each m×m tile has ≤ n kept per row and per column).

    Small m: the best of all exact patterns per tile (90 for 2:4). Larger m: greedy by |w|
    (never more than n per row / column, possibly fewer).
    """
    w2 = weight_matrix(w)
    rows, cols = w2.shape
    NM(n, m).bind(rows, cols)
    if rows % m:
        raise bad("rows", rows, f"a multiple of m={m} for a transposable {n}:{m} mask")
    tiles = _score(w2).reshape(rows // m, m, cols // m, m).transpose(0, 2, 1, 3).reshape(-1, m, m)
    pats = _square_patterns(n, m)
    if pats is not None:
        gain = tiles.reshape(len(tiles), m * m) @ pats.reshape(len(pats), m * m).T.astype(np.float64)
        best = pats[np.argmax(gain, axis=1)]
    else:
        best = np.zeros(tiles.shape, dtype=bool)
        order = np.argsort(-tiles.reshape(len(tiles), -1), axis=1, kind="stable")
        row_cnt = np.zeros((len(tiles), m), dtype=int)
        col_cnt = np.zeros((len(tiles), m), dtype=int)
        idx = np.arange(len(tiles))
        for step in range(m * m):
            flat = order[:, step]
            r, c = flat // m, flat % m
            ok = (row_cnt[idx, r] < n) & (col_cnt[idx, c] < n)
            best[idx[ok], r[ok], c[ok]] = True
            row_cnt[idx[ok], r[ok]] += 1
            col_cnt[idx[ok], c[ok]] += 1
    mask = best.reshape(rows // m, cols // m, m, m).transpose(0, 2, 1, 3).reshape(rows, cols)
    return mask.reshape(np.shape(w))


def block(w: np.ndarray, bh: int, bw: int, density: float) -> np.ndarray:
    """Block pruning: keep the round(density·blocks) bh×bw blocks of largest L2 norm."""
    w2 = weight_matrix(w)
    rows, cols = w2.shape
    Block(bh, bw, density).bind(rows, cols)
    norms = (_score(w2) ** 2).reshape(rows // bh, bh, cols // bw, bw).sum(axis=(1, 3))
    keep = _top(norms.ravel(), _keep_count(norms.size, density)).reshape(norms.shape)
    return np.kron(keep, np.ones((bh, bw), dtype=bool)).astype(bool).reshape(np.shape(w))


def group(w: np.ndarray, g: int, density: float) -> np.ndarray:
    """Fine-grained vector pruning: vectors of g consecutive weights along K, by L2 norm."""
    w2 = weight_matrix(w)
    Group(g, density).bind(*w2.shape)
    return block(w2, 1, g, density).reshape(np.shape(w))


def channel(w: np.ndarray, density: float, axis: int = 0, channel_size: int = 1) -> np.ndarray:
    """Channel pruning: whole rows (axis 0: filters / output features) or columns (axis 1) by L2
    norm. `channel_size` columns form one input channel (kh·kw for a conv's GEMM view)."""
    w2 = weight_matrix(w)
    rows, cols = w2.shape
    if axis not in (0, 1):
        raise bad("axis", axis, "0 (rows / output channels) or 1 (columns / input channels)")
    sq = _score(w2) ** 2
    if axis == 0:
        keep = _top(sq.sum(axis=1), _keep_count(rows, density))
        mask = np.broadcast_to(keep[:, None], (rows, cols))
    else:
        if cols % channel_size:
            raise bad("channel_size", channel_size, f"a divisor of K={cols}")
        per = sq.reshape(rows, cols // channel_size, channel_size).sum(axis=(0, 2))
        keep = np.repeat(_top(per, _keep_count(per.size, density)), channel_size)
        mask = np.broadcast_to(keep[None, :], (rows, cols))
    return mask.copy().reshape(np.shape(w))


def constant_fan_in(w: np.ndarray, k: int) -> np.ndarray:
    """Constant fan-in: every row (output) keeps exactly its k largest |w|."""
    w2 = weight_matrix(w)
    rows, cols = w2.shape
    ConstantFanIn(k).bind(rows, cols)
    order = np.argsort(-_score(w2), axis=1, kind="stable")[:, :k]
    mask = np.zeros((rows, cols), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(np.shape(w))


def mask_for(w: np.ndarray, pattern: Sparsity | str | dict, transposable: bool = False) -> np.ndarray:
    """The magnitude mask of `w` for a pattern object or its text form ('2:4', 'block4x4@0.5'…)."""
    p = parse_pattern(pattern, "pattern")
    if isinstance(p, Dense):
        return np.ones(np.shape(w), dtype=bool)
    if isinstance(p, NM):
        return transposable_nm(w, p.n, p.m) if transposable else nm(w, p.n, p.m)
    if isinstance(p, Unstructured):
        return magnitude(w, p.density)
    if isinstance(p, Block):
        return block(w, p.bh, p.bw, p.density)
    if isinstance(p, Group):
        return group(w, p.g, p.density)
    if isinstance(p, Channel):
        return channel(w, p.density, p.axis)
    if isinstance(p, ConstantFanIn):
        return constant_fan_in(w, p.k)
    raise bad("pattern", p.label, "dense, n:m, unstructured, block, group, channel, constant_fan_in")


def fits(pattern: Sparsity, shape: tuple[int, ...], transposable: bool = False) -> str | None:
    """None when a weight of this shape can hold the pattern, else why not."""
    rows, cols = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
    try:
        pattern.bind(rows, cols)
    except ValueError as e:
        return str(e)
    if transposable and isinstance(pattern, NM) and rows % pattern.m:
        return f"rows={rows} is not a multiple of m={pattern.m} (transposable)"
    return None


# --- torch wrappers -------------------------------------------------------------------------
def _prunable(model: Any) -> list[tuple[str, Any]]:
    from torch import nn

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, kinds)]


def _weight_np(module: Any) -> np.ndarray:
    w = getattr(module, "weight_orig", None)
    if w is None:
        w = module.weight
    return w.detach().float().cpu().numpy()


def torch_mask(module: Any, pattern: Sparsity | str | dict, transposable: bool = False):
    """A bool tensor shaped like `module.weight`: the magnitude mask for `pattern`."""
    import torch

    w = _weight_np(module)
    p = parse_pattern(pattern, "pattern")
    if isinstance(p, Channel) and p.axis == 1 and w.ndim == 4:
        m = channel(w, p.density, axis=1, channel_size=w.shape[2] * w.shape[3])
    else:
        m = mask_for(w, p, transposable)
    return torch.from_numpy(np.ascontiguousarray(m.reshape(w.shape)))


def prune_model(model: Any, pattern: Sparsity | str | dict, *, scope: str = "layer",
                transposable: bool = False, where: Callable[[str, Any], bool] | None = None,
                skip_incompatible: bool = True) -> dict[str, np.ndarray]:
    """Prune every Linear / Conv weight selected by `where(name, module)` (default: all).

    scope="layer": each weight gets `pattern` on its own; scope="global": one magnitude
    threshold across all selected weights (unstructured patterns only). Weights whose shape
    cannot hold the pattern (e.g. 2:4 on a conv with K = 3·7·7) stay dense when
    `skip_incompatible`, else raise. Masks are applied with
    `torch.nn.utils.prune.custom_from_mask`; the returned dict holds them as numpy arrays.
    The recipe is appended to `model.simsparse_pruning` (read back into trace provenance).
    """
    from torch.nn.utils import prune as tprune

    if scope not in ("layer", "global"):
        raise bad("scope", scope, "layer or global")
    p = parse_pattern(pattern, "pattern")
    chosen, skipped = [], []
    for name, mod in _prunable(model):
        if where is not None and not where(name, mod):
            continue
        reason = fits(p, tuple(_weight_np(mod).shape), transposable)
        if reason is not None:
            if not skip_incompatible:
                raise bad(f"{name}.weight", tuple(_weight_np(mod).shape), f"a shape that holds {p.label}: {reason}")
            skipped.append(name)
            continue
        chosen.append((name, mod))
    if scope == "global":
        if not isinstance(p, Unstructured):
            raise bad("scope", "global", "layer (global pruning is unstructured magnitude only)")
        masks = global_magnitude({n: _weight_np(m) for n, m in chosen}, p.density)
    else:
        masks = {n: torch_mask(m, p, transposable).numpy() for n, m in chosen}
    import torch

    for name, mod in chosen:
        tprune.custom_from_mask(mod, "weight", torch.from_numpy(np.ascontiguousarray(masks[name])))
    recipe = {"pattern": p.to_dict(), "scope": scope, "transposable": transposable,
              "pruned": len(chosen), "skipped": skipped, "method": "magnitude"}
    history = list(getattr(model, "simsparse_pruning", []))
    history.append(recipe)
    model.simsparse_pruning = history
    return masks
