"""The report's PNG charts, drawn from figures.py's tables (matplotlib, no display)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


# The reference drawn on the all_reduce chart (../shared/TESTBED.md, published): nccl-tests on
# one 8×H100/H200 host without NVLink SHARP.
ALL_REDUCE_REFERENCE_GBS = 370.0


def busbw(nccl, out_dir):
    """Out-of-place busbw against size per collective, one line per file, dtype and op; the
    all_reduce reference drawn."""
    if nccl.empty:
        return []
    paths = []
    for collective, rows in nccl[~nccl["in_place"]].groupby("collective"):
        fig, (bw, lat) = plt.subplots(1, 2, figsize=(11, 4))
        for (file, dtype, op), s in rows.groupby(["file", "dtype", "op"]):
            label = f"{file} {dtype} {op}".replace(" none", "")
            bw.plot(s["bytes"], s["busbw_gbs"], marker=".", label=label)
            lat.plot(s["bytes"], s["p50_us"], marker=".", label=f"{label} p50")
            lat.plot(s["bytes"], s["p99_us"], linestyle="--", label=f"{label} p99")
        for ax, what in ((bw, "busbw (GB/s)"), (lat, "time per launch (µs)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("bytes")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        if collective == "all_reduce":
            bw.axhline(ALL_REDUCE_REFERENCE_GBS, linestyle=":", color="black", label=f"reference: {ALL_REDUCE_REFERENCE_GBS:.0f} GB/s (8×H200 host, no NVLS)")
        lat.set_yscale("log")
        bw.set_title(f"{collective}: bus bandwidth, out of place")
        lat.set_title(f"{collective}: p50 / p99 launch time")
        bw.legend(fontsize=7)
        paths.append(_save(fig, out_dir, f"nccl_{collective}.png"))
    return paths


def sft(steps, out_dir):
    """Tokens/s and loss per step; the step split stacked per step."""
    if steps.empty:
        return []
    fig, (tps, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for file, s in steps.groupby("file"):
        tps.plot(s["step"], s["tokens_per_s"], marker=".", label=file)
        loss.plot(s["step"], s["loss"], marker=".", label=file)
    tps.set(xlabel="step", ylabel="tokens/s per GPU", title="SFT throughput")
    loss.set(xlabel="step", ylabel="loss", title="SFT loss")
    tps.legend(fontsize=7)
    paths = [_save(fig, out_dir, "sft_steps.png")]
    fig, ax = plt.subplots(figsize=(11, 4))
    first = steps[steps["file"] == steps["file"].iloc[0]]
    compute = first["forward_s"] + first["backward_s"] - first["comm_s"]
    other = (first["step_s"] - compute - first["comm_s"] - first["optimizer_s"]).clip(lower=0)
    bottom = np.zeros(len(first))
    for label, part in (("forward + backward compute", compute), ("exposed communication", first["comm_s"]), ("optimizer", first["optimizer_s"]), ("other", other)):
        ax.bar(first["step"], part, bottom=bottom, label=label)
        bottom += part.to_numpy()
    ax.set(xlabel="step", ylabel="seconds", title=f"step-time split ({first['file'].iloc[0]})")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "sft_split.png"))
    return paths


def memory(summaries, out_dir):
    """Planned against measured peak memory per file."""
    rows = [(name, s["planned_gib"], s["peak_gib"]) for name, s in summaries if s]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[1] for r in rows], 0.4, label="planned")
    ax.bar(x + 0.2, [r[2] for r in rows], 0.4, label="measured peak")
    ax.set_xticks(x, [r[0] for r in rows], fontsize=7)
    ax.set(ylabel="GiB per GPU", title="SFT memory")
    ax.legend(fontsize=7)
    return [_save(fig, out_dir, "sft_memory.png")]


def per_rank_steps(runs, out_dir):
    """Each rank's step times over the measured steps, stragglers (slowest) marked."""
    paths = []
    for run in runs:
        pr = run.sft["per_rank"] if run.sft else {}
        if "rank_step_s" not in pr:
            continue
        warm = run.sft["attrs"]["warmup_steps"]
        data = pr["rank_step_s"][warm:]
        if data.size == 0:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 0.4 * data.shape[1] + 3), 3.5))
        ax.boxplot([data[:, r] for r in range(data.shape[1])])
        # The slowest by its median step compute (step − exposed communication), as the run names it.
        compute = np.median(data - pr["rank_comm_s"][warm:], axis=0) if "rank_comm_s" in pr else np.median(data, axis=0)
        slow = int(np.argmax(compute))
        ax.plot([slow + 1], [np.median(data[:, slow])], "r*", markersize=12, label=f"slowest step compute: rank {slow}")
        ax.set(xlabel="rank", ylabel="step s", title=f"per-rank step time ({run.name})")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir, f"ranks_{len(paths)}.png"))
    return paths


# The most points a telemetry line is drawn with: a long run is drawn as bucket means.
LINE_POINTS = 2000


def thinned(r, field):
    """`r`'s (t_s, field) in time order, as at most LINE_POINTS bucket means."""
    r = r.sort_values("t_s")
    buckets = max(1, -(-len(r) // LINE_POINTS))
    if buckets == 1:
        return r["t_s"], r[field]
    key = np.arange(len(r)) // buckets
    return r["t_s"].groupby(key).mean(), r[field].groupby(key).mean()


def telemetry(rows, out_dir):
    """Utilisation, power, temperature and SM clock over time per GPU (each line at most
    LINE_POINTS bucket means), phases shaded."""
    if rows.empty:
        return []
    paths = []
    for file, t in rows.groupby("file"):
        fields = [f for f in ("gpu_util_pct", "power_w", "temp_gpu_c", "sm_clock_mhz") if f in t and np.isfinite(t[f]).any()]
        if not fields:
            fields = [f for f in ("process_cpu_s", "process_rss_bytes") if f in t]
        fig, axes = plt.subplots(len(fields), 1, figsize=(11, 2.2 * len(fields)), sharex=True, squeeze=False)
        # Phases from rank 0's samples in time order (the table is in batches, rank after rank).
        first = t[t["rank"] == t["rank"].min()].sort_values("t_s").reset_index(drop=True)
        kinds = first["phase"].str.split().str[0].str.rstrip(":")
        starts = list(first.index[kinds.ne(kinds.shift())]) + [len(first) - 1]
        for ax, field in zip(axes[:, 0], fields):
            for rank, r in t.groupby("rank"):
                ax.plot(*thinned(r, field), label=f"rank {rank}", linewidth=1)
            ax.set_ylabel(field, fontsize=8)
            for i in range(0, len(starts) - 1, 2):
                ax.axvspan(first.loc[starts[i], "t_s"], first.loc[starts[i + 1], "t_s"], color="grey", alpha=0.1)
        axes[0, 0].set_title(f"telemetry ({file}); shaded: alternate phases ({', '.join(dict.fromkeys(kinds))})", fontsize=9)
        axes[-1, 0].set_xlabel("s since start")
        if t["rank"].nunique() <= 16:
            axes[0, 0].legend(fontsize=7)
        paths.append(_save(fig, out_dir, f"telemetry_{len(paths)}.png"))
    return paths


def scaling(rows, out_dir):
    """Efficiency and tokens/s/GPU against GPU count, weak and strong."""
    rows = rows.dropna(subset=["tokens_per_s_per_gpu"]) if not rows.empty else rows
    if rows.empty:
        return []
    fig, (eff, tps) = plt.subplots(1, 2, figsize=(11, 4))
    for (file, mode), r in rows.groupby(["file", "mode"]):
        eff.plot(r["gpus"], 100 * r["efficiency"], marker="o", label=f"{file} {mode}")
        tps.plot(r["gpus"], r["tokens_per_s_per_gpu"], marker="o", label=f"{file} {mode}")
    for ax in (eff, tps):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("GPUs")
        ax.grid(alpha=0.3)
    eff.set(ylabel="efficiency (%)", title="scaling efficiency")
    tps.set(ylabel="tokens/s per GPU", title="throughput per GPU")
    eff.legend(fontsize=7)
    return [_save(fig, out_dir, "scaling.png")]


def verify(rows, out_dir):
    """Each verify figure per GPU or host against the median of its peers and the reference."""
    if rows.empty:
        return []
    figures = list(dict.fromkeys(rows["figure"]))
    fig, axes = plt.subplots(len(figures), 1, figsize=(9, 1.8 * len(figures) + 0.5), squeeze=False)
    for ax, name in zip(axes[:, 0], figures):
        r = rows[rows["figure"] == name]
        labels = [f"{f}:{s[:28]}" for f, s in zip(r["file"], r["subject"])]
        colours = ["tab:green" if p == 1 else "tab:red" for p in r["passed"].fillna(1)]
        ax.barh(labels, r["value"], color=colours)
        for line, style in ((r["median"], "--"), (r["reference_limit"], ":")):
            for v in line.dropna().unique():
                ax.axvline(v, linestyle=style, color="black")
        ax.set_title(f"{name} ({r['unit'].iloc[0]}); dashed: median of peers, dotted: reference", fontsize=8)
        ax.tick_params(labelsize=7)
    return [_save(fig, out_dir, "verify.png")]
