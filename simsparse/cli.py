"""The `simsparse` command line (typer). `python -m simsparse` is the same program.

Bad input prints one line naming the field and what is allowed, and exits 2; never a traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Simulate sparse neural networks on GPUs, sparse Tensor Cores, FPGAs, CPUs and ASICs.")
# user text (workload and trace names, patterns, paths, kernel descriptions) is printed as it is:
# no rich markup ('[/]', 'y[M,N]') or emoji codes (':m:') on stdout; stderr escapes what it quotes
console = Console(width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)  # piped: don't squeeze tables
err_console = Console(stderr=True, emoji=False)

DEFAULT_HARDWARE = ["h100-sxm", "h200", "a100-sxm4-80g", "v100"]
DEFAULT_SPARSITY = ["dense", "2:4", "unstructured@0.3", "unstructured@0.1"]
DEFAULT_WORKLOAD = "llama-2-7b"
OUT_DIR = Path("simsparse-out")
PHASE_HELP = "prefill | decode | train (built-in workloads; default: decode, prefill for encoders and ViT)"


def _note(msg: str) -> None:
    """A one-line remark on stderr (stdout stays the command's output)."""
    err_console.print(f"note: {msg}", markup=False, highlight=False, soft_wrap=True)


def _cannot_write(path: Path, option: str, e: OSError) -> ValueError:
    return ValueError(f"{option}: cannot write {str(path)!r} ({e.strerror or e}); allowed: a file path "
                      "whose folder exists or can be made")


def _writable(path: Path, option: str) -> Path:
    """`path` with its missing folders made; a directory, or a path under a file, is refused in one
    line naming `option` (before any work is done)."""
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, option, e) from None
    return path


@contextmanager
def _writing(path: Path, option: str) -> Iterator[Path]:
    """A block that only writes `path` (see _writable); its failure (no permission, disk full) is
    refused in one line naming `option`."""
    _writable(path, option)
    try:
        yield path
    except OSError as e:
        raise _cannot_write(path, option, e) from None


def _default_phase(workload: str) -> str:
    """decode (a decoder LM's token step, the quick-start job), or prefill for a transformer with no
    decode phase (encoders, ViT). CNNs take either."""
    from workloads.hf import family, load_config

    try:
        encoder = family(load_config(workload)[1]) in ("encoder", "vit")
    except (KeyError, TypeError, ValueError):  # not a transformer config: a CNN, a file, a results folder
        return "decode"
    return "prefill" if encoder else "decode"


def _once(values: list[str], key, option: str) -> list[str]:
    """`values` of a repeatable option with any given twice (same `key`: the same text, or two texts of
    one thing) kept once, with a note."""
    seen: dict[str, str] = {}
    for text in values:
        k = key(text)
        if k in seen:
            both = "" if text == seen[k] else f" (both {k})"
            _note(f"{option} {text} repeats {option} {seen[k]}{both}: simulated once")
        else:
            seen[k] = text
    return list(seen.values())


def _unique_hardware(names: list[str]) -> list[str]:
    """`names` with a machine given twice (an alias and its spec's name, or one name twice) kept once."""
    import hwmodels

    return _once(names, lambda name: hwmodels.load(name).name, "-H")


def _unique_patterns(patterns: list[str]) -> list[str]:
    """`patterns` with a pattern given twice (the same text, or two texts of one pattern) kept once."""
    from simsparse.core.sparsity import parse_pattern
    from workloads.recipe import looks_like_recipe

    def key(text: str) -> str:
        if text == "as-traced" or looks_like_recipe(text):
            return text.strip()
        return parse_pattern(text, "sparsity").label

    return _once(patterns, key, "-s")


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    """With no command: the quick-start job (simulate the default workload, print a table, write a plot)."""
    if ctx.invoked_subcommand is None:
        simulate()


@app.command("list")
def list_cmd(what: Annotated[str, typer.Argument(help="hardware | patterns | kernels | workloads | all")] = "all"
             ) -> None:
    """List built-in hardware, sparsity patterns, kernels and workloads."""
    import hwmodels
    import workloads
    from simsparse.core.sparsity import PATTERN_NAMES

    choices = ("hardware", "patterns", "kernels", "workloads", "all")
    if what not in choices:
        raise ValueError(f"what: got {what!r}; allowed: {', '.join(choices)}")
    if what in ("hardware", "all"):
        t = Table(title="hardware")
        for col in ("name", "class", "description", "peak fp16 TFLOP/s", "memory GB/s", "kernels measured on it"):
            t.add_column(col)
        for name in hwmodels.list():
            s = hwmodels.load(name)
            peak = s.peak_flops("fp16") / 1e12 if s.supports_dtype("fp16") else float("nan")
            name_cell = f"{name}\n(also: {', '.join(s.aliases)})" if s.aliases else name
            t.add_row(name_cell, s.hw_class, s.display_name, f"{peak:,.3g}", f"{s.dram_bw / 1e9:,.0f}",
                      ", ".join(s.measured_kernels) or "–")
        console.print(t)
    if what in ("patterns", "all"):
        console.print("[bold]sparsity patterns[/]: " + ", ".join(PATTERN_NAMES), markup=True)
        console.print("  text forms: dense, 2:4, unstructured@0.1, block16x16@0.2, group8@0.25, "
                      "channel@0.5, fanin16, activation@0.4")
    if what in ("kernels", "all"):
        t = Table(title="kernels")
        for col in ("kernel", "class", "weight format", "unit", "what it does"):
            t.add_column(col)
        for k in hwmodels.all_kernels().values():
            t.add_row(k.name, k.hw_class, k.weight_format, k.unit, k.description)
        console.print(t)
    if what in ("workloads", "all"):
        console.print("[bold]workloads[/]: " + ", ".join(workloads.names()), markup=True)


@app.command()
def simulate(
    workload: Annotated[str, typer.Argument(help="built-in workload name or a trace file (.json/.parquet)")]
    = DEFAULT_WORKLOAD,
    hardware: Annotated[list[str] | None, typer.Option("--hardware", "-H", help="spec name (repeat)")] = None,
    sparsity: Annotated[list[str] | None, typer.Option(
        "--sparsity", "-s", help="weight pattern for all linears (repeat): dense, 2:4, unstructured@0.1, …"
    )] = None,
    batch: Annotated[int, typer.Option(help="batch size (built-in workloads)")] = 16,
    seq_len: Annotated[int, typer.Option(help="sequence length (built-in workloads)")] = 1,
    phase: Annotated[str | None, typer.Option(help=PHASE_HELP)] = None,
    kv_len: Annotated[int, typer.Option(help="KV-cache length for decode")] = 2048,
    kernel: Annotated[str | None, typer.Option(help="force a kernel where legal (default: mapper picks)")] = None,
    measured_only: Annotated[bool, typer.Option(
        "--measured-only", help="pick among the kernels measured on each machine (in the op's dtype and run "
                                "conditions) wherever one can run the op")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table")] = False,
    csv: Annotated[Path | None, typer.Option(help="write the per-op table as CSV")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the comparison plot here")] = None,
) -> None:
    """Simulate a workload on one or more machines under one or more sparsity patterns."""
    import pandas as pd

    import hwmodels
    import workloads
    from simsparse.api import simulate as run
    from simsparse.core.ops import Trace
    from simsparse.plot import out_path

    hardware = _unique_hardware(hardware or DEFAULT_HARDWARE)
    sparsity = _unique_patterns(sparsity or (["as-traced"] if Trace.is_trace_file(workload) else DEFAULT_SPARSITY))
    if kernel is not None:  # every machine checked before any is simulated; on the command line it is --kernel
        for hw in hardware:
            offered = hwmodels.kernels(hwmodels.load(hw))
            if kernel not in offered:
                raise ValueError(f"--kernel: got {kernel!r}; allowed on {hw}: {', '.join(offered)} "
                                 "(or no --kernel: the mapper picks)")
    plot = _writable(out_path(plot or OUT_DIR / "simulate.png", "--plot"), "--plot")
    if csv:
        _writable(csv, "--csv")
    if Trace.is_trace_file(workload):
        base = Trace.load(workload)
    else:
        base = workloads.get(workload, batch=batch, seq_len=seq_len, phase=phase or _default_phase(workload),
                             kv_len=kv_len)
    summaries, frames = [], []
    for pattern in sparsity:
        trace = base if pattern == "as-traced" else workloads.apply_sparsity(base, pattern)
        for hw in hardware:
            res = run(trace, hw, mapper="measured" if measured_only else "auto", kernel=kernel)
            s = res.summary()
            s["sparsity"] = pattern
            summaries.append(s)
            df = res.to_frame()
            df.insert(2, "sparsity", pattern)
            frames.append(df)
    table = pd.DataFrame(summaries)
    dense_t = table[table.sparsity == sparsity[0]].set_index("hardware")["total_s"]
    table["speedup"] = table.apply(lambda r: dense_t.get(r["hardware"], float("nan")) / r["total_s"], axis=1)
    per_op = pd.concat(frames, ignore_index=True)
    if as_json:
        for row in table.to_dict(orient="records"):
            print(json.dumps(row))
    else:
        t = Table(title=f"{base.name}: {len(base)} ops, {base.flops / 1e9:,.1f} GFLOP (dense)")
        for col in ("hardware", "weight sparsity", "time ms", f"speed-up vs {sparsity[0]}", "useful TFLOP/s",
                    "energy J", "mostly bound by", "main GEMM kernel", "measured"):
            t.add_column(col, justify="right" if col not in ("hardware", "weight sparsity") else "left")
        for r in table.sort_values(["hardware", "total_s"]).itertuples():
            energy = "–" if math.isnan(r.energy_j) else f"{r.energy_j:.3f}"
            t.add_row(r.hardware, r.sparsity, f"{r.total_s * 1e3:.3f}", f"{r.speedup:.2f}x",
                      f"{r.tflops_per_s:.3g}", energy, r.bound_by_time, r.main_gemm_kernel,
                      f"{r.measured_share:.0%}" if hwmodels.load(r.hardware).measured_kernels else "–")
        console.print(t)
        console.print("measured: share of the time priced by kernels timed on that machine "
                       "(validation/data/); '–': none were, the numbers are the model's alone. "
                       "useful TFLOP/s: nonzero work per second. energy '–': the spec gives no power figure")
    if csv:  # after the table: an unwritable file costs the file, not the run
        with _writing(csv, "--csv"):
            per_op.to_csv(csv, index=False)
    from simsparse.plot import speedup_bars

    with _writing(plot, "--plot"):
        path = speedup_bars(table, plot, title=base.name, baseline=sparsity[0])
    if not as_json:
        console.print(f"plot written to {path}")


@app.command()
def predict(
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="JSON lines file (default: stdin)")]
    = None,
) -> None:
    """Batch contract: JSON lines on stdin → one JSON line per input on stdout (see README)."""
    import gc

    from simsparse.predict import predict_stream

    # this process only answers lines from here on: keep the collector's full passes off the
    # start-up objects (modules, numpy, pydantic; ~0.1 s per 10k lines)
    gc.freeze()

    try:
        stream = input_file.open() if input_file else sys.stdin
    except OSError as e:
        raise ValueError(f"--input: cannot read {str(input_file)!r} ({e.strerror}); allowed: a JSON lines "
                         "file (or no --input: stdin)") from None
    failed = 0
    out = sys.stdout
    for result in predict_stream(stream):
        failed += "error" in result
        out.write(json.dumps(result, default=str) + "\n")
    out.flush()
    if failed:
        raise typer.Exit(code=1)


@app.command()
def sweep(
    spec_file: Annotated[Path, typer.Argument(help="sweep spec (.yaml); see examples/sweeps/")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="results directory (resumable Parquet store)")]
    = None,
    workers: Annotated[int, typer.Option(help="local worker processes (0 = in-process)")] = 0,
    dask: Annotated[str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="points per task (default: automatic)")] = None,
    fresh: Annotated[bool, typer.Option(help="recompute points already in --out")] = False,
    csv: Annotated[Path | None, typer.Option(help="also write all rows as CSV")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar, no summary")] = False,
) -> None:
    """Run a what-if sweep into a results store; re-running skips finished points."""
    from simsparse.sweep import sweep as run_sweep

    out = out or OUT_DIR / f"sweep-{spec_file.stem}"
    if csv:
        _writable(csv, "--csv")
    stats: dict = {}
    df = run_sweep(spec_file, out=out, workers=workers, dask=dask, chunk_size=chunk_size, fresh=fresh,
                   progress=not quiet, stats=stats)
    if not quiet:
        rate = f" ({stats['points_per_s']:,.0f} points/s)" if stats["computed"] else ""
        console.print(f"{stats['points']:,} points: {stats['skipped']:,} already done, {stats['computed']:,} "
                      f"computed in {stats['run_s']:.1f} s{rate}, {stats['errors']:,} with errors -> {out}",
                      highlight=False)
        if stats["errors"]:
            console.print(f"most common error: {stats['top_error']}", highlight=False)
    if csv:  # after the summary: the rows are in the store whatever happens to the CSV
        with _writing(csv, "--csv"):
            df.to_csv(csv, index=False)


@app.command()
def plot(
    kind: Annotated[str, typer.Argument(help="roofline | heatmap | pareto | validation | breakdown")],
    source: Annotated[str, typer.Argument(help="heatmap/pareto: sweep results dir or file; validation: "
                                               "table with predicted/measured columns; roofline/breakdown: "
                                               "workload name or trace file")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write")] = None,
    hardware: Annotated[list[str] | None, typer.Option("--hardware", "-H", help="spec name (repeat)")] = None,
    sparsity: Annotated[list[str] | None, typer.Option("--sparsity", "-s", help="weight pattern (repeat)")]
    = None,
    batch: Annotated[int, typer.Option(help="batch size (built-in workloads)")] = 16,
    seq_len: Annotated[int, typer.Option(help="sequence length (built-in workloads)")] = 1,
    phase: Annotated[str | None, typer.Option(help=PHASE_HELP)] = None,
    kv_len: Annotated[int, typer.Option(help="KV-cache length for decode")] = 2048,
    predicted: Annotated[str, typer.Option(help="validation: predicted column")] = "predicted_s",
    measured: Annotated[str, typer.Option(help="validation: measured column")] = "measured_s",
    baseline: Annotated[str, typer.Option(help="heatmap: the pattern speed-ups are relative to")] = "dense",
    title: Annotated[str, typer.Option(help="plot title")] = "",
) -> None:
    """Draw a roofline, speed-up heatmap, Pareto front, validation scatter or per-op breakdown (PNG)."""
    from simsparse.plot import out_path, plot_cli

    out = _writable(out_path(out, "--out"), "--out") if out else None  # plot_cli's default: simsparse-out/KIND.png
    path = plot_cli(kind, source, out, hardware=hardware, sparsity=sparsity, batch=batch, seq_len=seq_len,
                    phase=phase or _default_phase(source), kv_len=kv_len, predicted=predicted, measured=measured,
                    baseline=baseline, title=title)
    console.print(f"plot written to {path}")


@app.command()
def extract(
    model: Annotated[str, typer.Argument(help="built-in workload name, or pkg.module:function / file.py:function "
                                              "returning (model, example_inputs)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="trace file to write (.json or .parquet)")]
    = Path("trace.json"),
    batch: Annotated[int, typer.Option(help="batch size (built-in workloads)")] = 1,
    seq_len: Annotated[int, typer.Option(help="sequence length (transformers)")] = 128,
    phase: Annotated[str, typer.Option(help="prefill | decode | train")] = "prefill",
    kv_len: Annotated[int | None, typer.Option(help="KV-cache length for decode (default: seq-len)")] = None,
    dtype: Annotated[str, typer.Option(help="dtype of the trace's ops")] = "fp16",
    sparsity: Annotated[str | None, typer.Option("--sparsity", "-s", help="pattern or recipe: '2:4', "
                                                 "'all linears 2:4; 50% teal on mlp inputs'")] = None,
    prune: Annotated[str | None, typer.Option(help="torch models: magnitude-prune every Linear/Conv first "
                                              "(2:4, unstructured@0.1, block16x16@0.5, …)")] = None,
    activations: Annotated[str | None, typer.Option(help="torch models: measured | teal@0.5 | topk@0.25 | "
                                                    "oracle")] = None,
    seed: Annotated[int, typer.Option(help="seed of synthetic weights, inputs and MoE routing")] = 0,
    rows: Annotated[int, typer.Option(help="ops listed in the table (0 = all)")] = 25,
) -> None:
    """Extract an operator trace (config, CNN layer table or torch module) to a file and summarise it."""
    from workloads.extract import extract as run_extract
    from workloads.torch_extract import summary_rows

    if out.suffix not in (".json", ".parquet"):
        raise ValueError(f"--out: got {str(out)!r}; allowed: a file name ending in .json or .parquet")
    _writable(out, "--out")
    trace = run_extract(model, batch=batch, seq_len=seq_len, phase=phase, kv_len=kv_len, dtype=dtype,
                        sparsity=sparsity, prune=prune, activations=activations, seed=seed)
    with _writing(out, "--out"):
        trace.save(out)
    t = Table(title=f"{trace.name}: {len(trace)} ops, {trace.flops / 1e9:,.3f} GFLOP (dense) -> {out}")
    for col in ("op", "kind", "phase", "shape", "dtype", "weight", "activation", "GFLOP"):
        t.add_column(col, justify="right" if col == "GFLOP" else "left")
    all_rows = summary_rows(trace)
    shown = all_rows if rows <= 0 else all_rows[:rows]
    for r in shown:
        t.add_row(r["op"], r["kind"], r["phase"], r["shape"], r["dtype"], r["weight"], r["activation"],
                  f"{r['gflop']:.4f}")
    if len(shown) < len(all_rows):
        t.add_row(f"… {len(all_rows) - len(shown)} more ops", *[""] * 7)
    console.print(t)


@app.command()
def calibrate(
    hardware: Annotated[str, typer.Option("--hardware", "-H", help="GPU spec whose YAML efficiencies are fitted")]
    = "h200",
    data: Annotated[Path | None, typer.Option(help="measurement .jsonl(.gz) file or directory "
                                              "(default: validation/data/<hardware>)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="fit and print; write no YAML")] = False,
    transfer: Annotated[list[str] | None, typer.Option(help="also write the SM-level values to this spec "
                                                       "(repeat; default for h200: h100-sxm)")] = None,
) -> None:
    """Fit a GPU spec's efficiency parameters on the fit half of measured kernels (crc32('NxK') even)."""
    from simsparse.calibrate import calibrate as run

    to = tuple(transfer) if transfer is not None else (("h100-sxm",) if hardware == "h200" else ())
    console.print(f"calibrating {hardware} on the fit half of {data or f'validation/data/{hardware}'}")
    run(data, hardware, write=not dry_run, transfer=to, log=lambda s: console.print(s, highlight=False))


@app.command()
def validate(
    hardware: Annotated[str, typer.Option("--hardware", "-H", help="GPU spec to validate")] = "h200",
    data: Annotated[Path | None, typer.Option(help="measurement .jsonl(.gz) file or directory "
                                              "(default: validation/data/<hardware>)")] = None,
    plot: Annotated[Path | None, typer.Option(help="predicted-vs-measured plot, the summary JSON next to it "
                                              "(default: validation/reports/<hardware>_pred_vs_meas.png; "
                                              "with --data: simsparse-out/)")] = None,
) -> None:
    """Per-kernel MAPE on the held-out (and fit) half of measured kernels, worst cases, sign accuracy, plot."""
    from simsparse.plot import out_path
    from simsparse.validate import format_report
    from simsparse.validate import validate as run

    plot = _writable(out_path(plot, "--plot"), "--plot") if plot else None
    rep = run(data, hardware, plot_path=plot)
    console.print(format_report(rep), highlight=False, soft_wrap=True)
    if not rep.passed():
        raise typer.Exit(code=1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def measure(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="cpu: numba kernels + BLAS on this machine; gpu: CUDA kernels")]
    = "cpu",
) -> None:
    """Time the package's kernels on this machine (JSON lines); extra options go to the harness
    (cpu: --out DIR --quick --probe-only --core N --builds N --cold --tables T,... --shuffle SEED
    --state-probe --regimes --new-layers --same-process --complete FILE; see
    `python -m simsparse.measure_cpu -h`)."""
    import importlib.util

    if device == "cpu":
        from simsparse.measure_cpu import main as run
    elif device == "gpu":
        if importlib.util.find_spec("simsparse.measure_gpu") is None:
            raise ValueError("device: gpu needs simsparse/measure_gpu.py, which is not installed here")
        from simsparse.measure_gpu import main as run
    else:
        raise ValueError(f"device: got {device!r}; allowed: cpu, gpu")
    code = run(list(ctx.args))
    if code:
        raise typer.Exit(code=code)


def main() -> None:
    """Entry point: run the app, turning input errors into one clear line (exit 2)."""
    from simsparse.core.errors import SpecError

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (SpecError, ValueError, OSError) as e:  # the message quotes user text: escaped, never markup
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # usage errors from typer's (vendored) click: no traceback either
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise
