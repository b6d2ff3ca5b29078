"""The `simsparse` command line (typer). `python -m simsparse` is the same program.

Bad input prints one line naming the field and what is allowed, and exits 2; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Simulate sparse neural networks on GPUs, sparse Tensor Cores, FPGAs, CPUs and ASICs.")
console = Console(width=None if sys.stdout.isatty() else 160)  # piped output: don't squeeze tables
err_console = Console(stderr=True)

DEFAULT_HARDWARE = ["h100-sxm", "h200", "a100-sxm4-80g", "v100"]
DEFAULT_SPARSITY = ["dense", "2:4", "unstructured@0.3", "unstructured@0.1"]
DEFAULT_WORKLOAD = "llama-2-7b"
OUT_DIR = Path("simsparse-out")


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
        for col in ("name", "class", "description", "peak fp16 TFLOP/s", "memory GB/s"):
            t.add_column(col)
        for name in hwmodels.list():
            s = hwmodels.load(name)
            peak = s.peak_flops("fp16") / 1e12 if s.supports_dtype("fp16") else float("nan")
            t.add_row(name, s.hw_class, s.display_name, f"{peak:,.1f}", f"{s.dram_bw / 1e9:,.0f}")
        console.print(t)
    if what in ("patterns", "all"):
        console.print("[bold]sparsity patterns[/]: " + ", ".join(PATTERN_NAMES))
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
        console.print("[bold]workloads[/]: " + ", ".join(workloads.names()))


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
    phase: Annotated[str, typer.Option(help="prefill | decode (built-in workloads)")] = "decode",
    kv_len: Annotated[int, typer.Option(help="KV-cache length for decode")] = 2048,
    kernel: Annotated[str | None, typer.Option(help="force a kernel where legal (default: mapper picks)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table")] = False,
    csv: Annotated[Path | None, typer.Option(help="write the per-op table as CSV")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the comparison plot here")] = None,
) -> None:
    """Simulate a workload on one or more machines under one or more sparsity patterns."""
    import pandas as pd

    import workloads
    from simsparse.api import simulate as run
    from simsparse.core.ops import Trace

    hardware = hardware or DEFAULT_HARDWARE
    sparsity = sparsity or (DEFAULT_SPARSITY if not Path(workload).suffix else ["as-traced"])
    if Path(workload).suffix in (".json", ".parquet"):
        base = Trace.load(workload)
    else:
        base = workloads.get(workload, batch=batch, seq_len=seq_len, phase=phase, kv_len=kv_len)
    summaries, frames = [], []
    for pattern in sparsity:
        trace = base if pattern == "as-traced" else workloads.apply_sparsity(base, pattern)
        for hw in hardware:
            res = run(trace, hw, kernel=kernel)
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
    if csv:
        per_op.to_csv(csv, index=False)
    if as_json:
        for row in table.to_dict(orient="records"):
            print(json.dumps(row))
    else:
        t = Table(title=f"{base.name}: {len(base)} ops, {base.flops / 1e12:.2f} TFLOP (dense)")
        for col in ("hardware", "weight sparsity", "time ms", f"speed-up vs {sparsity[0]}", "TFLOP/s",
                    "energy J", "mostly bound by"):
            t.add_column(col, justify="right" if col not in ("hardware", "weight sparsity") else "left")
        for r in table.sort_values(["hardware", "total_s"]).itertuples():
            t.add_row(r.hardware, r.sparsity, f"{r.total_s * 1e3:.3f}", f"{r.speedup:.2f}x",
                      f"{r.tflops_per_s:.1f}", f"{r.energy_j:.3f}", r.bound_by_time)
        console.print(t)
    plot = plot or OUT_DIR / "simulate.png"
    from simsparse.plot import speedup_bars

    path = speedup_bars(table, plot, title=base.name, baseline=sparsity[0])
    if not as_json:
        console.print(f"plot written to {path}")


@app.command()
def predict(
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="JSON lines file (default: stdin)")]
    = None,
) -> None:
    """Batch contract: JSON lines on stdin → one JSON line per input on stdout (see README)."""
    from simsparse.predict import predict_stream

    stream = input_file.open() if input_file else sys.stdin
    failed = 0
    out = sys.stdout
    for result in predict_stream(stream):
        failed += "error" in result
        out.write(json.dumps(result, default=str) + "\n")
    out.flush()
    if failed:
        raise typer.Exit(code=1)


def main() -> None:
    """Entry point: run the app, turning input errors into one clear line (exit 2)."""
    from simsparse.core.errors import SpecError

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (SpecError, ValueError, FileNotFoundError) as e:
        err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click usage errors etc.
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
