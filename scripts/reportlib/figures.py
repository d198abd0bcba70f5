"""Every figure of the report, recomputed from the raw datasets (never copied from the
program's own summaries), with its formula beside it. Each function takes a load.Run."""
import json

import numpy as np
import pandas as pd

def bus_factor(collective, n):
    """nccl-tests' bus bandwidth factor of `collective` over `n` ranks."""
    return {"all_reduce": 2 * (n - 1) / n, "reduce_scatter": (n - 1) / n, "all_gather": (n - 1) / n, "alltoall": (n - 1) / n}.get(collective, 1.0)


AGGREGATE = {"rank0": lambda t: t[:, 0], "avg": lambda t: t.mean(axis=1), "min": lambda t: t.min(axis=1), "max": lambda t: t.max(axis=1)}


def nccl_rows(run):
    """One row per series and size half: time = the series' -a pick over each rank's mean
    launch time; algbw = bytes / time; busbw = algbw × the collective's bus factor (nccl-tests:
    2(n−1)/n all_reduce, (n−1)/n reduce_scatter, all_gather and alltoall, 1 broadcast and
    sendrecv); p50/p99 over every rank's every launch."""
    out = []
    for s in run.nccl or []:
        a, rows = s["attrs"], s["rows"]
        time_us = AGGREGATE[a["aggregate"]](s["rank_time_us"])
        launches = s["iteration_time_us"].reshape(len(rows), -1)
        algbw = rows["bytes"].to_numpy() / time_us / 1e3
        out.append(pd.DataFrame({
            "file": run.name, "collective": a["collective"], "dtype": a["dtype"], "op": a["op"], "ranks": a["ranks"], "engine": a["engine"],
            "bytes": rows["bytes"], "in_place": rows["in_place"].astype(bool), "time_us": time_us, "algbw_gbs": algbw,
            "busbw_gbs": algbw * bus_factor(a["collective"], a["ranks"]), "p50_us": np.percentile(launches, 50, axis=1), "p99_us": np.percentile(launches, 99, axis=1),
            "wrong": rows["wrong"],
        }))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def sft_steps(run):
    """Per step: tokens/s = this rank's tokens ÷ step_s; model TFLOP/s = tokens/s × FLOPs per
    token (6N + 12·L·d·T) ÷ 1e12; MFU = model FLOP/s ÷ the peak named in the file."""
    s = run.sft
    if s is None:
        return pd.DataFrame()
    st = s["steps"].copy()
    a = s["attrs"]
    st.insert(0, "file", run.name)
    st["tokens_per_s"] = st["tokens"] / st["step_s"]
    st["model_tflops"] = st["tokens_per_s"] * a["flops_per_token"] / 1e12
    st["mfu"] = st["tokens_per_s"] * a["flops_per_token"] / a["peak_flops"] if a["engine"] == "cuda" else np.nan
    st["measured"] = st["step"] > a["warmup_steps"]
    return st


def sft_summary(run):
    """Over the measured steps (after the warm-up): tokens/s per GPU = Σ tokens ÷ Σ step_s;
    MFU as per step; J per token = Σ every rank's energy over the measured steps ÷ Σ their
    tokens (every rank does the same tokens a step); the slowest rank by its median step
    compute (step_s − comm_s)."""
    st = sft_steps(run)
    if st.empty:
        return None
    a, m = run.sft["attrs"], st[st["measured"]]
    tps = m["tokens"].sum() / m["step_s"].sum() if len(m) else np.nan
    out = {"model": a["model"], "engine": a["engine"], "measured_steps": len(m), "tokens_per_s_per_gpu": tps, "step_s": m["step_s"].mean(),
           "mfu": tps * a["flops_per_token"] / a["peak_flops"] if a["engine"] == "cuda" else np.nan,
           "comm_exposed_ms": 1e3 * m["comm_s"].mean(), "comm_busy_ms": 1e3 * m["comm_busy_s"].mean(), "planned_gib": a["planned_memory_bytes"] / 2**30,
           "peak_gib": st["peak_memory_bytes"].max() / 2**30, "joules_per_token": np.nan, "slowest_rank": None, "finished": run.sft["finished"]}
    pr = run.sft["per_rank"]
    warm = a["warmup_steps"]
    if "rank_energy_j" in pr:
        energy = pr["rank_energy_j"][warm:]
        if np.isfinite(energy).all() and energy.size:
            out["joules_per_token"] = energy.sum() / (m["tokens"].sum() * energy.shape[1])
    if "rank_step_s" in pr and "rank_comm_s" in pr and pr["rank_step_s"].shape[0] > warm:
        compute = np.median(pr["rank_step_s"][warm:] - pr["rank_comm_s"][warm:], axis=0)
        out["slowest_rank"] = int(np.argmax(compute))
        out["median_compute_s_per_rank"] = compute
    return out


def verify_rows(run):
    """Per figure and subject: value = median over repetitions of work ÷ seconds (latency:
    seconds × 1e6 ÷ work), the verdict as the file gives it."""
    v = run.verify
    if v is None:
        return pd.DataFrame()
    rows = []
    for name, p in v["probes"].items():
        latency = "µs" in p["attrs"].get("unit", "")
        for i, subject in enumerate(p["subject"]):
            seconds = p["seconds"][i]
            seconds = seconds[np.isfinite(seconds)]
            value = np.median(seconds * 1e6 / p["work"][i]) if latency else np.median(p["work"][i] / seconds)
            rows.append({"file": run.name, "figure": name, "subject": subject, "unit": p["attrs"].get("unit", ""), "value": value})
    out = pd.DataFrame(rows, columns=["file", "figure", "subject", "unit", "value"])
    keep = ["figure", "subject", "median", "median_limit", "reference_limit", "reference", "passed"]
    verdicts = v["verdicts"].reindex(columns=keep)
    return out.merge(verdicts, on=["figure", "subject"], how="left")


def health_rows(run):
    """The health failures the file records (verify)."""
    v = run.verify
    if v is None or v["health"].empty:
        return []
    return [f"{run.name}: rank {r['rank']}: {r['failure']}" for r in v["health"].to_dict("records")]


def scaling_rows(run):
    """Per mode and size, from /scaling/<mode>_<size>'s raw step times: per sub-world (one per
    replica at size 1), tokens per GPU over the measured steps ÷ Σ each step's slowest rank's
    time; the median over the sub-worlds; efficiency = that ÷ the smallest measured size's
    (weak: per GPU; strong: speed-up ÷ GPU ratio, the same ratio at one global batch)."""
    sc = run.scaling
    if sc is None:
        return pd.DataFrame()
    p, warm = sc["points"], sc["attrs"]["warmup_steps"]
    run_json = run.sft["run"] if run.sft else {}
    rows, baseline = [], {}
    for i in range(len(p)):
        mode, size = p["mode"][i], int(p["ranks"][i])
        raw = sc["measured"].get(f"{mode}_{size}")
        row = {"file": run.name, "mode": mode, "gpus": size, "hosts": int(p["hosts"][i]), "global_batch": int(p["global_batch"][i]),
               "tokens_per_s_per_gpu": np.nan, "efficiency": np.nan, "skipped": p["skipped"][i]}
        if raw is not None:
            step_s = raw["rank_step_s"][warm:]  # [steps, ranks]
            tokens = int(p["micro_batch"][i]) * int(p["grad_accum"][i]) * run_json.get("seq", 0) * step_s.shape[0]
            per = [tokens / step_s[:, r:r + size].max(axis=1).sum() for r in range(0, step_s.shape[1], size)]
            row["tokens_per_s_per_gpu"] = float(np.median(per))
            base = baseline.setdefault(mode, row["tokens_per_s_per_gpu"])
            row["efficiency"] = row["tokens_per_s_per_gpu"] / base
        rows.append(row)
    return pd.DataFrame(rows)


def telemetry_rows(run):
    """The samples as recorded (one row per rank and sample), with the file's name."""
    t = run.telemetry
    if t is None:
        return pd.DataFrame()
    t = t.copy()
    t.insert(0, "file", run.name)
    return t


def scaling_from_runs(runs):
    """Where no file has /scaling: the finished SFT runs of one model shape, sequence and
    micro-batch at several GPU counts, one row per file; efficiency = tokens/s/GPU ÷ the
    fewest GPUs' (weak scaling across runs)."""
    rows = []
    for run in runs:
        s = sft_summary(run)
        if s and s["finished"]:
            shape = (s["model"], json.dumps(run.sft["model"], sort_keys=True), run.sft["run"].get("seq"), run.sft["run"].get("micro_batch"))
            rows.append({"file": run.name, "shape": shape, "gpus": int(run.meta.get("world_size", 1)), "tokens_per_s_per_gpu": s["tokens_per_s_per_gpu"]})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    # Only runs of one model, shape, sequence and micro-batch at several GPU counts compare.
    out = out[out.groupby("shape")["gpus"].transform("nunique") > 1].sort_values("gpus")
    if out.empty:
        return out
    out["efficiency"] = out["tokens_per_s_per_gpu"] / out.groupby("shape")["tokens_per_s_per_gpu"].transform("first")
    return out.drop(columns="shape").assign(mode="weak (separate runs)", hosts=np.nan, global_batch=np.nan, skipped="")
