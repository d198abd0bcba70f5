#!/usr/bin/env python3
"""The report an operator hands to a buyer, from h200-mpibench results files: DIR/report.md,
DIR/report.html (self-contained), PNG charts and CSV files, every figure recomputed from the
raw datasets (scripts/reportlib/figures.py has the formulas).

    python3 scripts/report.py results/run.h5 [more.h5 ...] -o report/

Several files: their rows side by side (two clusters, two builds, two NCCL settings), and a
scaling table from separate single-size SFT runs where no file has /scaling. A file that is
not ours is refused with one line (exit 2); a `.partial` one is reported and marked partial.
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reportlib import charts, figures, render  # noqa: E402
from reportlib.load import NotOurs, load  # noqa: E402

CSV_COLUMNS = {
    "summary.csv": ["file", "phase", "seconds", "exit_code", "partial"],
    "sft_steps.csv": ["file", "step", "loss", "lr", "grad_norm", "step_s", "forward_s", "backward_s", "optimizer_s", "comm_s", "comm_busy_s", "tokens", "tokens_per_s", "model_tflops", "mfu", "peak_memory_bytes", "measured"],
    "nccl.csv": ["file", "collective", "dtype", "op", "ranks", "engine", "bytes", "in_place", "time_us", "algbw_gbs", "busbw_gbs", "p50_us", "p99_us", "wrong"],
    "gpu_metrics.csv": ["file", "t_s", "rank", "phase", "gpu_util_pct", "power_w", "energy_j", "temp_gpu_c", "sm_clock_mhz", "mem_used_bytes", "process_cpu_s", "process_rss_bytes"],
    "verify.csv": ["file", "figure", "subject", "unit", "value", "median", "reference_limit", "passed"],
    "scaling.csv": ["file", "mode", "gpus", "hosts", "global_batch", "tokens_per_s_per_gpu", "efficiency", "skipped"],
}


def progress(line):
    print(line, file=sys.stderr, flush=True)


def summary_rows(runs):
    """One row per file and phase: its wall time and exit code (attributes phase_<name>_*)."""
    rows = []
    for run in runs:
        phases = [k[len("phase_"):-len("_s")] for k in run.meta if k.startswith("phase_") and k.endswith("_s")]
        for phase in phases or [run.meta.get("suite", "")]:
            rows.append({"file": run.name, "phase": phase, "seconds": run.meta.get(f"phase_{phase}_s", np.nan),
                         "exit_code": run.meta.get(f"phase_{phase}_exit_code", run.meta.get("exit_code", np.nan)), "partial": run.partial})
    return pd.DataFrame(rows)


def csv(frame, name, out_dir):
    """`frame` as DIR/name with the documented columns (pyarrow's writer: a one-hour 64-rank
    telemetry table is millions of rows, ten times faster than pandas' own)."""
    frame = frame.reindex(columns=CSV_COLUMNS[name])
    pyarrow.csv.write_csv(pyarrow.Table.from_pandas(frame, preserve_index=False), os.path.join(out_dir, name))


def verdict(runs, nccl, sfts, scaling, verify):
    """The five lines: busbw at the largest size, SFT throughput, scaling, energy, failures."""
    lines = []
    ar = nccl[(nccl["collective"] == "all_reduce") & ~nccl["in_place"]] if not nccl.empty else nccl
    ar = ar[ar["ranks"] > 1] if not ar.empty else ar
    if not ar.empty:
        best = ar.loc[ar.groupby("file")["bytes"].idxmax()]
        lines.append("all_reduce busbw at the largest size: " + "; ".join(f"{r.file}: {r.busbw_gbs:,.1f} GB/s at {r.bytes:,} B over {r.ranks} rank(s) ({r.engine})" for r in best.itertuples())
                     + f" (reference: {charts.ALL_REDUCE_REFERENCE_GBS:.0f} GB/s, nccl-tests on one 8×H100/H200 host without NVLink SHARP)")
    else:
        lines.append("all_reduce: no sweep of more than one rank in these files (one rank measures no link)")
    done = [(n, s) for n, s in sfts if s]
    lines.append("SFT: " + ("; ".join(f"{n}: {s['model']} {s['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU, MFU {render.fmt(100 * s['mfu'])} %" for n, s in done) if done else "no SFT run in these files"))
    measured = scaling.dropna(subset=["efficiency"]) if not scaling.empty else scaling
    if not measured.empty:
        top = measured.loc[measured.groupby(["file", "mode"])["gpus"].idxmax()]
        lines.append("scaling efficiency at the largest size: " + "; ".join(f"{r.file} {r.mode}: {100 * r.efficiency:.1f} % at {r.gpus} GPU(s)" for r in top.itertuples()))
    else:
        lines.append("scaling: not measured in these files")
    energy = [(n, s["joules_per_token"]) for n, s in done if np.isfinite(s["joules_per_token"])]
    lines.append("energy: " + ("; ".join(f"{n}: {j:.4f} J per token" for n, j in energy) if energy else "no energy counter read"))
    failed = verify[verify["passed"] == 0] if not verify.empty else verify
    slow = [f"{n}: slowest rank {s['slowest_rank']}" for n, s in done if s.get("slowest_rank") is not None and run_size(runs, n) > 1]
    problems = [f"{r.file}: {r.figure} of {r.subject} FAILED ({r.value:,.4g})" for r in failed.itertuples()]
    problems += [f"health {line}" for run in runs for line in figures.health_rows(run)]
    lines.append("problems: " + ("; ".join(problems) if problems else "no failed verification") + ("; " + "; ".join(slow) if slow else ""))
    return "".join(f"{i}. {line}\n" for i, line in enumerate(lines, 1))


def run_size(runs, name):
    return next(int(r.meta.get("world_size", 1)) for r in runs if r.name == name)


def build(paths, out_dir):
    runs = load(paths, progress)
    os.makedirs(out_dir, exist_ok=True)
    progress("report: recomputing the figures")
    nccl = pd.concat([figures.nccl_rows(r) for r in runs], ignore_index=True)
    steps = pd.concat([figures.sft_steps(r) for r in runs], ignore_index=True)
    sfts = [(r.name, figures.sft_summary(r)) for r in runs]
    verify = pd.concat([figures.verify_rows(r) for r in runs], ignore_index=True)
    scaling = pd.concat([figures.scaling_rows(r) for r in runs], ignore_index=True)
    from_runs = figures.scaling_from_runs(runs) if scaling.empty else pd.DataFrame()
    telemetry = pd.concat([figures.telemetry_rows(r) for r in runs], ignore_index=True)
    progress("report: drawing the charts")
    shown = scaling if not scaling.empty else from_runs
    md = ["# h200-mpibench report\n", "## Verdict\n", verdict(runs, nccl, sfts, shown, verify)]
    md += ["## System\n", render.system(runs)]

    def lacks(part, what):
        return "".join(f"{r.name} has no {what}.\n\n" for r in runs if getattr(r, part) is None)

    md += ["## Verify\n", lacks("verify", "verify group")]
    if not verify.empty:
        md.append(render.table(verify, [("file", "file", 0), ("figure", "figure", 0), ("GPU or host", "subject", 0), ("unit", "unit", 0), ("value", "value", 1),
                                         ("median of peers", "median", 1), ("reference limit", "reference_limit", 1), ("passed", "passed", 0)]))
        md += [render.image(p, out_dir, "verify figures against the median and the reference") for p in charts.verify(verify, out_dir)]

    md += ["## Collectives\n", lacks("nccl", "nccl sweep")]
    if not nccl.empty:
        largest = nccl[~nccl["in_place"]].sort_values("bytes").groupby(["file", "collective", "dtype", "op"]).tail(1)
        md.append("Out of place, at each series' largest size (nccl.csv has every size):\n\n")
        md.append(render.table(largest, [("file", "file", 0), ("collective", "collective", 0), ("dtype", "dtype", 0), ("op", "op", 0), ("ranks", "ranks", 0), ("bytes", "bytes", 0),
                                         ("time µs", "time_us", 1), ("algbw GB/s", "algbw_gbs", 2), ("busbw GB/s", "busbw_gbs", 2), ("p50 µs", "p50_us", 1), ("p99 µs", "p99_us", 1), ("wrong", "wrong", 0)]))
        md += [render.image(p, out_dir, os.path.basename(p)[:-4]) for p in charts.busbw(nccl, out_dir)]

    md += ["## SFT\n", lacks("sft", "sft run")]
    done = [dict(file=n, **s) for n, s in sfts if s]
    if done:
        md.append(render.table(done, [("file", "file", 0), ("model", "model", 0), ("engine", "engine", 0), ("measured steps", "measured_steps", 0), ("tokens/s/GPU", "tokens_per_s_per_gpu", 0),
                                      ("step s", "step_s", 4), ("MFU", "mfu", 3), ("exposed comm ms", "comm_exposed_ms", 2), ("busy comm ms", "comm_busy_ms", 2),
                                      ("planned GiB", "planned_gib", 2), ("peak GiB", "peak_gib", 2), ("J/token", "joules_per_token", 4), ("finished", "finished", 0)]))
        md += [render.image(p, out_dir, os.path.basename(p)[:-4]) for p in charts.sft(steps, out_dir) + charts.memory(sfts, out_dir) + charts.per_rank_steps(runs, out_dir)]

    md += ["## Scaling\n"]
    if shown.empty:
        md.append("No file has /scaling, and the SFT runs given do not span several GPU counts.\n")
    else:
        if scaling.empty:
            md.append("From separate single-size SFT runs (no /scaling in these files): efficiency = tokens/s/GPU ÷ the fewest GPUs' run.\n\n")
        md.append(render.table(shown, [("file", "file", 0), ("mode", "mode", 0), ("GPUs", "gpus", 0), ("hosts", "hosts", 0), ("global batch", "global_batch", 0),
                                       ("tokens/s/GPU", "tokens_per_s_per_gpu", 0), ("efficiency", "efficiency", 3), ("skipped", "skipped", 0)]))
        md += [render.image(p, out_dir, "scaling") for p in charts.scaling(shown, out_dir)]

    md += ["## Telemetry\n", lacks("telemetry", "telemetry table")]
    if not telemetry.empty:
        agg = telemetry.groupby(["file", "rank"]).agg(samples=("t_s", "size"), mean_power_w=("power_w", "mean"), peak_temp_c=("temp_gpu_c", "max"), mean_sm_clock_mhz=("sm_clock_mhz", "mean"), mean_util_pct=("gpu_util_pct", "mean")).reset_index()
        md.append(render.table(agg, [("file", "file", 0), ("rank", "rank", 0), ("samples", "samples", 0), ("mean power W", "mean_power_w", 0), ("peak °C", "peak_temp_c", 0),
                                     ("mean SM clock MHz", "mean_sm_clock_mhz", 0), ("mean utilisation %", "mean_util_pct", 0)]))
        md += [render.image(p, out_dir, os.path.basename(p)[:-4]) for p in charts.telemetry(telemetry, out_dir)]
    md += ["## Method\n", render.METHOD]
    text = "\n".join(md)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(render.to_html(text, out_dir, "h200-mpibench report"))
    progress("report: writing the CSV files")
    for frame, name in ((summary_rows(runs), "summary.csv"), (steps, "sft_steps.csv"), (nccl, "nccl.csv"), (telemetry, "gpu_metrics.csv"), (verify, "verify.csv"), (shown, "scaling.csv")):
        csv(frame, name, out_dir)
    progress(f"report: {os.path.join(out_dir, 'report.md')}, report.html, the charts and CSV files in {out_dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="results files (.h5, or .partial from a run that died)")
    parser.add_argument("-o", "--out", required=True, help="folder for report.md, report.html, the charts and CSV files")
    args = parser.parse_args()
    try:
        build(args.files, args.out)
    except NotOurs as e:
        print(f"report: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
