#!/usr/bin/env python3
"""A large results file for timing scripts/report.py: a real file (TEMPLATE) grown to RANKS
ranks and HOURS of run time, in the same layout (telemetry every 100 ms per rank, one SFT step
a second, each sweep series' per-rank tables), values drawn around the template's own.

    python3 scripts/simulate_results.py docs/...h5 /tmp/big.h5 --ranks 64 --hours 1
    /usr/bin/time -v python3 scripts/report.py /tmp/big.h5 -o /tmp/big-report
"""
import argparse
import shutil

import h5py
import numpy as np


def replace(group, name, data, **kw):
    if name in group:
        del group[name]
    return group.create_dataset(name, data=data, chunks=True, compression="gzip", **kw)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template")
    parser.add_argument("out")
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    rng = np.random.default_rng(a.seed)
    shutil.copy(a.template, a.out)
    n, seconds = a.ranks, a.hours * 3600
    text = h5py.string_dtype()
    with h5py.File(a.out, "a") as f:
        f.attrs["world_size"] = np.uint64(n)
        r = f["ranks"]
        for key in list(r):
            first = r[key][0]
            values = [f"node{i // 8:03d}" for i in range(n)] if key == "host" else [first] * n
            replace(r, key, np.array(values, dtype=text if isinstance(first, (bytes, str)) else r[key].dtype))
        t = f["telemetry"]
        samples = int(seconds * 10)
        times = np.tile(np.arange(samples) * 0.1, n)
        ranks = np.repeat(np.arange(n, dtype=np.uint64), samples)
        steps = (np.arange(samples) // 10 + 1)
        phases = np.array([f"sft step {s}" for s in steps], dtype=object)
        rows = len(t["rank"])
        for key in list(t):
            d = t[key]
            if not isinstance(d, h5py.Dataset):
                continue
            if key == "t_s":
                replace(t, key, times)
            elif key == "rank":
                replace(t, key, ranks)
            elif key == "phase":
                replace(t, key, np.tile(phases, n), dtype=text)
            elif d.ndim == 1 and len(d) == rows and d.dtype.kind == "f":
                base = d[:]
                base = base[np.isfinite(base)]
                centre = float(np.median(base)) if base.size else np.nan
                replace(t, key, centre * (1 + 0.02 * rng.standard_normal(samples * n)))
            elif key.endswith("_per_rank"):
                replace(t, key, np.repeat(d[:1], n, axis=0))
        s = f["sft"]
        step_count = int(seconds)
        for key in list(s):
            d = s[key]
            if isinstance(d, h5py.Dataset) and d.ndim == 1 and key != "straggler_ranks" and not key.endswith("_per_rank"):
                values = np.resize(d[:], step_count)
                replace(s, key, np.arange(1, step_count + 1, dtype=d.dtype) if key == "step" else values)
            elif isinstance(d, h5py.Dataset) and d.ndim == 2:
                values = np.resize(d[:, 0], step_count)[:, None] * (1 + 0.01 * rng.standard_normal((step_count, n)))
                replace(s, key, values)
            elif key.endswith("_per_rank"):
                replace(s, key, np.resize(d[:], n))
        for collective in f.get("nccl", {}):
            for g in f["nccl"][collective].values():
                for key in ("rank_time_us", "iteration_time_us", "energy_j_per_rank", "seconds_per_rank"):
                    if key in g:
                        d = g[key][:]
                        grown = np.repeat(d[:, :1], n, axis=1) if d.ndim >= 2 else np.resize(d, n)
                        replace(g, key, grown)
                g.attrs["ranks"] = np.uint64(n)
        for name in ("verify", "scaling"):
            if name in f:
                del f[name]
    print(f"{a.out}: {n} ranks, {seconds:.0f} s, {samples * n:,} telemetry rows, {step_count:,} SFT steps")


if __name__ == "__main__":
    main()
