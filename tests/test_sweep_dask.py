"""The Dask path: a 2-worker LocalCluster (processes) gives exactly the in-process rows."""

from __future__ import annotations

import pandas as pd
import pytest

from simsparse.sweep import sweep

distributed = pytest.importorskip("distributed")

SPEC = {
    "gemms": {"m": [1, 16, 256], "n": [1024, 4096], "k": 2048},
    "workloads": [{"name": "llama-2-7b", "batch": [1, 8], "seq_len": 1, "phase": "decode", "kv_len": 256}],
    "sparsity": ["dense", "2:4", "unstructured@0.2"],
    "hardware": ["h100-sxm", "a100-sxm4-80g"],
}


def _counts() -> int:
    import importlib

    ev = importlib.import_module("simsparse.sweep")._EVALUATOR
    return 0 if ev is None else ev.misses


def test_dask_local_cluster_matches_in_process(tmp_path):
    expected = sweep(SPEC)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        # by address, as `simsparse sweep --dask tcp://…` does, into a store
        got = sweep(SPEC, out=tmp_path / "res", dask=cluster.scheduler_address, chunk_size=6)
        with distributed.Client(cluster) as client:
            # and with a Client, in memory
            again = sweep(SPEC, dask=client, chunk_size=9)
            per_worker = client.run(_counts)
    cols = sorted(expected.columns)
    for df in (got, again):
        assert list(df["key"]) == list(expected["key"])
        pd.testing.assert_frame_equal(df[cols].reset_index(drop=True), expected[cols].reset_index(drop=True))
    assert len(per_worker) == 2 and sum(per_worker.values()) > 0
