"""A resumable results store: a directory of Parquet files, one row per sweep point.

Layout of a store directory::

    results/
      part-<time_ns>-<pid>-<rand>.parquet   one finished chunk each (never modified)
      .tmp-<pid>-<rand>.parquet             a chunk being written (ignored; cleaned when its
                                            writer is gone)
      _meta/<spec hash>.json                the sweep specs that wrote here (provenance)

Every row carries `key`, a stable hash of the point's inputs and the simsparse version.
Crash safety comes from the write protocol: a chunk is written to a temp file, fsynced, then
atomically renamed into place (POSIX rename), and the directory is fsynced. A reader sees a
chunk either whole or not at all, so a writer killed at any moment (SIGKILL included) leaves
no partial rows behind. Readers dedupe by key (the newest row wins, so a `--fresh` re-run
supersedes old results) so two sweeps sharing a store never yield duplicate rows.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PART_GLOB = "part-*.parquet"
TMP_PREFIX = ".tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultStore:
    """A Parquet dataset directory keyed by point hash; safe to kill at any moment."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out: got {str(self.path)!r}; allowed: a directory (this is a file)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.clean_tmp()

    # --- writing ------------------------------------------------------------------------
    def write(self, table: pa.Table) -> Path | None:
        """Atomically add one chunk of rows (a pyarrow Table with a `key` column)."""
        if table.num_rows == 0:
            return None
        if "key" not in table.column_names:
            raise ValueError("table: got no 'key' column; allowed: a table with a 'key' column")
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.path / f"{TMP_PREFIX}{tag}.parquet"
        final = self.path / f"part-{time.time_ns():020d}-{tag}.parquet"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)  # atomic on POSIX: the part appears whole or not at all
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(self.path)
        return final

    def write_meta(self, name: str, meta: dict[str, Any]) -> Path:
        """Record provenance (e.g. the sweep spec) under _meta/, atomically."""
        d = self.path / "_meta"
        d.mkdir(exist_ok=True)
        final = d / f"{name}.json"
        tmp = d / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.json"
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, final)
        return final

    # --- reading ------------------------------------------------------------------------
    def parts(self) -> list[Path]:
        """Finished chunk files, oldest first."""
        return sorted(self.path.glob(PART_GLOB))

    def clean_tmp(self) -> int:
        """Remove temp files left by writers that no longer run; return how many."""
        n = 0
        for p in list(self.path.glob(f"{TMP_PREFIX}*")) + list(self.path.glob(f"_meta/{TMP_PREFIX}*")):
            try:
                pid = int(p.name[len(TMP_PREFIX):].split("-")[0])
            except ValueError:
                pid = -1
            if pid <= 0 or not _pid_alive(pid):
                try:
                    p.unlink()
                    n += 1
                except FileNotFoundError:
                    pass
        return n

    def _read_part(self, path: Path, columns: list[str] | None = None) -> pa.Table | None:
        """One part, or None (and the file set aside as .corrupt) if it cannot be read."""
        try:
            if columns is not None:
                have = set(pq.read_schema(path).names)
                columns = [c for c in columns if c in have]
            return pq.read_table(path, columns=columns)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as e:
            bad_path = path.with_suffix(".corrupt")
            warnings.warn(f"results store: {path.name} is unreadable ({e}); set aside as {bad_path.name}, "
                          "its points will be recomputed", stacklevel=3)
            try:
                os.replace(path, bad_path)
            except OSError:
                pass
            return None

    def keys(self, ok_only: bool = False) -> set[str]:
        """Keys of every stored point (only those without an `error`, if ok_only)."""
        out: set[str] = set()
        for p in self.parts():
            t = self._read_part(p, ["key", "error"] if ok_only else ["key"])
            if t is None:
                continue
            keys = t.column("key").to_pylist()
            if ok_only and "error" in t.column_names:
                errs = t.column("error").to_pylist()
                keys = [k for k, e in zip(keys, errs, strict=True) if not e]
            out.update(keys)
        return out

    def read_table(self, keys: Iterable[str] | None = None) -> pa.Table | None:
        """All rows (or those with the given keys) as one Arrow table, one row per key."""
        tables = [t for t in (self._read_part(p) for p in self.parts()) if t is not None]
        if not tables:
            return None
        table = pa.concat_tables(tables, promote_options="permissive")
        return _dedupe(table, keys)

    def read(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """All rows (or those with the given keys) as a DataFrame, one row per key."""
        table = self.read_table(keys)
        return pd.DataFrame() if table is None else table.to_pandas()

    def __len__(self) -> int:
        return len(self.keys())

    def compact(self) -> Path | None:
        """Rewrite all parts as one (deduped); old parts are removed after the new one is in place."""
        old = self.parts()
        table = self.read_table()
        if table is None or len(old) <= 1:
            return old[0] if old else None
        new = self.write(table)
        for p in old:
            p.unlink(missing_ok=True)
        _fsync_dir(self.path)
        return new


def _dedupe(table: pa.Table, keys: Iterable[str] | None) -> pa.Table:
    """Keep the newest (last written) row of each key, and only the wanted keys if given."""
    import numpy as np

    col = table.column("key").to_pylist()
    wanted = set(keys) if keys is not None else None
    seen: set[str] = set()
    take = []
    for i in range(len(col) - 1, -1, -1):
        k = col[i]
        if k in seen or (wanted is not None and k not in wanted):
            continue
        seen.add(k)
        take.append(i)
    if len(take) == table.num_rows:
        return table
    return table.take(pa.array(np.asarray(take[::-1], dtype=np.int64)))


def read_results(path: str | Path) -> pd.DataFrame:
    """A store directory, a Parquet / CSV / JSON-lines file → DataFrame (what `simsparse plot` reads)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"results: got {str(path)!r}; allowed: an existing results directory or file")
    if path.is_dir():
        if not list(path.glob(PART_GLOB)):
            raise ValueError(f"results: got {str(path)!r}; allowed: a directory written by `simsparse sweep` "
                             "(no part-*.parquet files here)")
        return ResultStore(path).read()
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(path, lines=path.suffix != ".json")
    raise ValueError(f"results: got {path.suffix!r}; allowed: a directory, .parquet, .csv, .jsonl")
