"""A sweep SIGKILLed mid-way resumes with no lost, duplicated or corrupted rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from simsparse.store import ResultStore
from simsparse.sweep import sweep

SPEC = {
    "name": "crash",
    "gemms": {"m": [1, 8, 32, 128, 512, 2048], "n": [512, 1024, 2048, 4096, 8192],
              "k": [512, 1024, 2048, 4096, 8192]},
    "sparsity": ["dense", "2:4", "unstructured@0.3", "unstructured@0.1", "block16x16@0.25"],
    "hardware": ["h100-sxm", "a100-sxm4-80g", "v100"],
}  # 2,250 points


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_and_kill(spec_path: Path, out: Path, min_new_parts: int, extra: list[str]) -> list[int]:
    """Start `simsparse sweep`, SIGKILL it once `min_new_parts` more chunks are in; return its children."""
    before = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
    proc = subprocess.Popen([sys.executable, "-m", "simsparse", "sweep", str(spec_path), "--out", str(out),
                             "--chunk-size", "10", "--quiet", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    kids: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _children(proc.pid) or kids
        if len(list(out.glob("part-*.parquet"))) >= before + min_new_parts:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return kids


def _check_store(out: Path) -> pd.DataFrame:
    """Every part readable; no finished point stored twice (a failed point may be retried)."""
    keys, where = [], []
    for p in ResultStore(out).parts():
        t = pq.read_table(p, columns=["key", "error"]).to_pandas()
        keys += list(t.loc[t["error"].isna(), "key"])
        where.append(f"{p.name}: {len(t)} rows, {t['error'].notna().sum()} failed")
    assert len(keys) == len(set(keys)), "a point was written twice:\n" + "\n".join(where)
    df = ResultStore(out).read()
    assert df["key"].is_unique
    return df


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, workers):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(json.dumps(SPEC))
    out = tmp_path / "res"
    extra = ["--workers", str(workers)] if workers else []

    kids = _start_and_kill(spec_path, out, 3, extra)
    partial = _check_store(out)
    assert 0 < len(partial) < 2250
    if workers:  # its worker processes leave too, instead of lingering as orphans
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kids and not any(_alive(k) for k in kids)

    _start_and_kill(spec_path, out, 3, extra)  # killed again while resuming
    assert len(_check_store(out)) > len(partial)

    stats: dict = {}
    resumed = sweep(spec_path, out=out, stats=stats)  # and finished in-process
    assert 0 < stats["skipped"] < 2250 and stats["skipped"] + stats["computed"] == 2250
    assert not list(out.glob(".tmp-*"))

    reference = sweep(SPEC)
    cols = sorted(reference.columns)
    assert len(resumed) == len(reference) == 2250
    pd.testing.assert_frame_equal(resumed[cols].reset_index(drop=True), reference[cols].reset_index(drop=True))
    stored = _check_store(out)
    assert len(stored) == 2250 and set(stored["key"]) == set(reference["key"])
    assert os.listdir(out)  # the store itself is intact
