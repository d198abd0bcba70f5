#!/usr/bin/env python3
"""Reads an h200-mpibench HDF5 results file (also a `.partial` one from a run that died) and
prints, per series, the out-of-place busbw by size plus p50/p99 launch times recomputed from
the raw per-launch times. `--json` prints the same as JSON (the integration tests use it).

    python3 scripts/results_summary.py results/20261121T120000Z_nccl.h5
"""
import argparse
import json
import sys

import h5py
import numpy as np


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def scalar(value):
    """An attribute as plain Python; NaN (not applicable, e.g. MFU on the CPU) as None."""
    if isinstance(value, (bytes, str)):
        return text(value)
    value = value.item()
    return None if isinstance(value, float) and value != value else value


def plain(values):
    """A dataset's values as lists, NaN (not read) as None: JSON has no NaN."""
    values = np.asarray(values).tolist()
    if isinstance(values, list):
        return [plain(v) for v in values]
    return None if isinstance(values, float) and values != values else values


TELEMETRY_META = ("t_s", "rank", "phase", "events", "source_per_rank")


def telemetry_summary(g, world_size):
    """What /telemetry holds: rows per rank, the phases, which fields were read, the figures."""
    rank, t = g["rank"][:], g["t_s"][:]
    fields = [k for k in g if isinstance(g[k], h5py.Dataset) and k not in TELEMETRY_META and g[k].ndim == 1 and len(g[k]) == len(rank)]
    return {
        "period_ms": scalar(g.attrs["period_ms"]),
        "rows_per_rank": [int((rank == r).sum()) for r in range(world_size)],
        "time_ordered_per_rank": all(bool(np.all(np.diff(t[rank == r]) > 0)) for r in range(world_size)),
        "phases": sorted({text(p) for p in g["phase"][:]}),
        "fields_read": sorted(k for k in fields if np.isfinite(g[k][:]).any()),
        "source_per_rank": [text(x) for x in g["source_per_rank"][:]],
        "events": len(g["events"]["t_s"]),
        "figures": {k: plain(g[k][:]) for k in g if k.endswith("_per_rank") and k != "source_per_rank"},
    }


def verify_summary(g):
    """/verify: its attributes, every verdict, each probe's raw shape, the inventory and health."""
    columns = lambda h: {k: ([text(x) for x in h[k][:]] if h[k].dtype.kind == "O" else plain(h[k][:])) for k in h if isinstance(h[k], h5py.Dataset)}
    probes = {}
    for name, p in g["probes"].items():
        probes[name] = {"unit": text(p.attrs["unit"]), "subject": [text(x) for x in p["subject"][:]], "variant": [text(x) for x in p["variant"][:]], "ranks": [text(x) for x in p["ranks"][:]],
                        "work": plain(p["work"][:]), "value": plain(p["value"][:]), "seconds": plain(p["seconds"][:]), "seconds_shape": list(p["seconds"].shape)}
    out = {k: scalar(v) for k, v in g.attrs.items()}
    out.update({"verdicts": columns(g["verdicts"]), "probes": probes, "inventory": columns(g["inventory"]),
                "health": columns(g["health"]), "skipped": columns(g["skipped"]), "reference_per_rank": [text(x) for x in g["reference_per_rank"][:]],
                "p2p_copy_gbs": plain(g["p2p_copy_gbs"][:]) if "p2p_copy_gbs" in g else None,
                "burn": columns(g["burn"]) if "burn" in g else None})
    return out


def series_of(parent):
    """Every sweep series under `parent` (/nccl, or a scaling size's /scaling/sweep_<n>)."""
    series = []
    for coll in parent:
        for name, g in parent[coll].items():
            raw = g["iteration_time_us"][:]
            rows = []
            for i in range(len(g["bytes"])):
                launches = raw[i].ravel()
                rows.append({
                    "bytes": int(g["bytes"][i]),
                    "count": int(g["count"][i]),
                    "in_place": bool(g["in_place"][i]),
                    "time_us": float(g["time_us"][i]),
                    "busbw_gbs": float(g["busbw_gbs"][i]),
                    "wrong": int(g["wrong"][i]),
                    "p50_us": float(np.percentile(launches, 50)) if launches.size else None,
                    "p99_us": float(np.percentile(launches, 99)) if launches.size else None,
                })
            series.append({
                "energy_j_per_rank": plain(g["energy_j_per_rank"][:]) if "energy_j_per_rank" in g else None,
                "seconds_per_rank": plain(g["seconds_per_rank"][:]) if "seconds_per_rank" in g else None,
                "collective": text(g.attrs["collective"]),
                "dtype": text(g.attrs["dtype"]),
                "op": text(g.attrs["op"]),
                "ranks": int(g.attrs["ranks"]),
                "raw_shape": list(raw.shape),
                "rows": rows,
            })
    return series


def scaling_summary(g):
    """/scaling: its attributes, the table of points, and each measured size's raw step figures."""
    points = g["points"]
    out = {k: scalar(v) if np.ndim(v) == 0 else plain(v) for k, v in g.attrs.items()}
    out["sizes"] = plain(g["sizes"][:])
    out["points"] = {k: ([text(x) for x in points[k][:]] if points[k].dtype.kind == "O" else plain(points[k][:])) for k in points}
    groups = {name: h for name, h in g.items() if isinstance(h, h5py.Group) and name != "points"}
    out["measured"] = {name: {k: plain(h[k][:]) for k in h} for name, h in groups.items() if not name.startswith("sweep_")}
    out["sweeps"] = {name: series_of(h)[0] for name, h in groups.items() if name.startswith("sweep_")}
    return out


def summarize(path):
    with h5py.File(path, "r") as f:
        run = {k: scalar(v) for k, v in f.attrs.items()}
        ranks = {k: [text(x) for x in f["ranks"][k][:]] for k in f["ranks"]} if "ranks" in f else {}
        series = series_of(f["nccl"]) if "nccl" in f else []
        sft = None
        if "sft" in f:
            g = f["sft"]
            sft = {k: scalar(v) for k, v in g.attrs.items()}
            sft.update({k: plain(g[k][:]) for k in g if isinstance(g[k], h5py.Dataset)})
            if "profile" in g:
                p = g["profile"]
                sft["profile"] = {
                    "step_ms": scalar(p.attrs["step_ms"]),
                    "op": [text(o) for o in p["op"][:]],
                    "calls": p["calls"][:].tolist(),
                    "ms": p["ms"][:].tolist(),
                }
        selftest = None
        if "selftest" in f:
            g = f["selftest"]
            selftest = {k: [text(x) for x in g[k][:]] if k in ("op", "shape") else g[k][:].tolist() for k in g}
        verify = verify_summary(f["verify"]) if "verify" in f else None
        scaling = scaling_summary(f["scaling"]) if "scaling" in f else None
        world = int(run.get("world_size", 1) or 1)
        telemetry = telemetry_summary(f["telemetry"], world) if "telemetry" in f and "t_s" in f["telemetry"] else None
    return {"run": run, "ranks": ranks, "series": series, "sft": sft, "selftest": selftest, "telemetry": telemetry, "verify": verify, "scaling": scaling}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    summary = summarize(args.file)
    if args.json:
        json.dump(summary, sys.stdout, default=float)
        print()
        return
    run = summary["run"]
    print(f"# {args.file}: {run.get('suite')} over {run.get('engine')}, {run.get('world_size')} ranks, "
          f"NCCL {run.get('nccl_version')}, started {run.get('start_utc')}, exit code {run.get('exit_code', 'unfinished')}")
    if run.get("stopped"):
        print(f"# stopped: {run['stopped']}")
    sft = summary["sft"]
    if sft and "summary_tokens_per_s" not in sft:
        print(f"\n## sft {sft['model']} on {sft['engine']}: unfinished, {len(sft['step'])} steps recorded, no summary")
    elif sft:
        mfu = "n/a (CPU)" if sft["summary_mfu"] is None else f"{100 * sft['summary_mfu']:.1f} %"
        print(f"\n## sft {sft['model']} on {sft['engine']}: {sft['summary_tokens_per_s']:.0f} tokens/s, "
              f"{sft['summary_model_tflops']:.4f} model TFLOP/s, MFU {mfu} over {sft['summary_measured_steps']} steps")
        gib = 2.0 ** 30
        memory = (f"memory per GPU: planned {sft['planned_memory_bytes'] / gib:.2f} GiB, our buffers' peak" if sft["engine"] == "cuda"
                  else "memory: peak resident")
        print(f"{memory} {max(sft['peak_memory_bytes']) / gib:.2f} GiB; "
              f"communication per step: {1e3 * sft['summary_comm_s']:.1f} ms exposed, {1e3 * sft['summary_comm_busy_s']:.1f} ms busy, "
              f"{sft['summary_comm_bytes'] / 1e9:.2f} GB sent")
        print(f"{'step':>5} {'loss':>8} {'lr':>9} {'grad norm':>9} {'step s':>8} {'tokens/s':>10} {'comm s':>8}")
        for i, step in enumerate(sft["step"]):
            print(f"{step:>5} {sft['loss'][i]:>8.4f} {sft['lr'][i]:>9.2e} {sft['grad_norm'][i]:>9.3f} "
                  f"{sft['step_s'][i]:>8.3f} {sft['tokens_per_s'][i]:>10.0f} {sft['comm_s'][i]:>8.4f}")
        if "profile" in sft:
            p = sft["profile"]
            print(f"\n## GPU time by op, last step ({p['step_ms']:.1f} ms)")
            for op, calls, ms in sorted(zip(p["op"], p["calls"], p["ms"]), key=lambda r: -r[2]):
                print(f"{op:<44} {calls:>6} {ms:>9.3f} {100 * ms / p['step_ms']:>6.1f}%")
    v = summary["verify"]
    if v:
        print(f"\n## verify ({v['level']}): {v['figures_failed']} figure(s) and the health of {v['ranks_health_failed']} rank(s) failed")
        d = v["verdicts"]
        for i, figure in enumerate(d["figure"]):
            verdict = "ok" if d["passed"][i] else "FAILED"
            value, median = (("-" if x is None else f"{x:.4g}") for x in (d["value"][i], d["median"][i]))
            print(f"{figure:<26} {d['subject'][i]:<52} {value:>10}  median {median:>10}  {verdict}")
        for rank, failure in zip(v["health"]["rank"], v["health"]["failure"]):
            print(f"health of rank {rank}: {failure}")
    sc = summary["scaling"]
    if sc:
        p = sc["points"]
        print(f"\n## scaling ({sc['modes']}), {sc['steps']} steps per size")
        print(f"{'mode':<7} {'GPUs':>5} {'tokens/s/GPU':>13} {'efficiency':>10}  skipped")
        for i, mode in enumerate(p["mode"]):
            tps, eff = p["tokens_per_s_per_gpu"][i], p["efficiency"][i]
            print(f"{mode:<7} {p['ranks'][i]:>5} {tps or float('nan'):>13.0f} {100 * (eff or float('nan')):>9.1f}%  {p['skipped'][i]}")
    for s in summary["series"]:
        print(f"\n## {s['collective']} {s['dtype']} {s['op']} ({s['ranks']} ranks)")
        print(f"{'bytes':>12} {'busbw GB/s':>11} {'time us':>9} {'p50 us':>9} {'p99 us':>9} {'wrong':>6}")
        for r in s["rows"]:
            if not r["in_place"]:
                print(f"{r['bytes']:>12} {r['busbw_gbs']:>11.2f} {r['time_us']:>9.2f} {r['p50_us'] or 0:>9.2f} "
                      f"{r['p99_us'] or 0:>9.2f} {r['wrong']:>6}")


if __name__ == "__main__":
    main()
