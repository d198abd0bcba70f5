"""One results file as plain tables (pandas), read once; a file that is not ours is refused
with one line, a `.partial` one (a run that died) is read and marked partial."""
import json
import os

import h5py
import numpy as np
import pandas as pd


class NotOurs(Exception):
    """The one line a bad input gets."""


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def attrs(node):
    """A node's attributes as plain Python (text decoded, numbers as float/int)."""
    out = {}
    for key, value in node.attrs.items():
        if isinstance(value, (bytes, str)):
            out[key] = text(value)
        elif np.ndim(value) == 0:
            out[key] = value.item()
        else:
            out[key] = [text(v) if isinstance(v, bytes) else v for v in np.asarray(value).tolist()]
    return out


def columns(group, names=None):
    """The group's 1-D datasets of equal length as a DataFrame (text decoded)."""
    data = {}
    for name in names or [k for k in group if isinstance(group[k], h5py.Dataset) and group[k].ndim == 1]:
        values = group[name][:]
        data[name] = [text(v) for v in values] if values.dtype.kind in "OS" else values
    # A run killed mid-write may have grown some columns by a batch more than others.
    shortest = min((len(v) for v in data.values()), default=0)
    return pd.DataFrame({k: v[:shortest] for k, v in data.items()})


class Run:
    """What one file holds. Each part is None where the file lacks its group."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.partial = path.endswith(".partial")
        try:
            # A running job's .partial file is open for writing: read it without HDF5's lock.
            f = h5py.File(path, "r", locking=False)
        except OSError as e:
            raise NotOurs(f"{path}: not an HDF5 file ({e})") from None
        with f:
            if text(f.attrs.get("program", b"")) != "h200-mpibench":
                raise NotOurs(f"{path}: an HDF5 file, but not an h200-mpibench results file (no program attribute)")
            try:
                self._read(f)
            except (KeyError, OSError, ValueError) as e:
                raise NotOurs(f"{path}: an h200-mpibench file this report cannot read (damaged or from another version): {e}") from None

    def _read(self, f):
        self.meta = attrs(f)
        self.partial = self.partial or "end_utc" not in self.meta
        self.ranks = columns(f["ranks"]) if "ranks" in f else pd.DataFrame()
        self.nccl = self._series(f["nccl"]) if "nccl" in f else None
        self.sft = self._sft(f["sft"]) if "sft" in f else None
        self.verify = self._verify(f["verify"]) if "verify" in f else None
        self.telemetry = self._telemetry(f["telemetry"]) if "telemetry" in f and "t_s" in f["telemetry"] else None
        self.scaling = self._scaling(f["scaling"]) if "scaling" in f else None

    @staticmethod
    def _series(parent):
        """Every sweep series: its attributes, its rows and the raw per-rank, per-launch times."""
        series = []
        for collective in parent:
            for name, g in parent[collective].items():
                rows = columns(g, ["bytes", "count", "in_place", "time_us", "algbw_gbs", "busbw_gbs", "wrong"])
                series.append({"attrs": attrs(g), "rows": rows, "rank_time_us": g["rank_time_us"][:], "iteration_time_us": g["iteration_time_us"][:]})
        return series

    @staticmethod
    def _sft(g):
        per_rank = {k: g[k][:] for k in g if k.startswith("rank_") and g[k].ndim == 2}
        sft = {"attrs": attrs(g), "steps": columns(g, [k for k in g if isinstance(g[k], h5py.Dataset) and g[k].ndim == 1 and not k.endswith("_per_rank") and k != "straggler_ranks"]),
               "per_rank": per_rank, "model": json.loads(text(g.attrs["model_json"])), "run": json.loads(text(g.attrs["run_json"]))}
        sft["finished"] = "summary_step_s" in sft["attrs"]
        return sft

    @staticmethod
    def _verify(g):
        probes = {}
        for name, p in g["probes"].items():
            # A verdict's subject is "label, variant" where the probe has variants (sizes).
            subjects = [f"{text(s)}, {text(v)}" if text(v) else text(s) for s, v in zip(p["subject"][:], p["variant"][:])]
            probes[name] = {"attrs": attrs(p), "subject": subjects, "work": p["work"][:], "seconds": p["seconds"][:]}
        return {"attrs": attrs(g), "verdicts": columns(g["verdicts"]), "probes": probes, "health": columns(g["health"]) if "health" in g else pd.DataFrame()}

    @staticmethod
    def _telemetry(g):
        names = ["t_s", "rank", "phase", "gpu_util_pct", "power_w", "energy_j", "temp_gpu_c", "sm_clock_mhz", "mem_used_bytes", "process_cpu_s", "process_rss_bytes"]
        return columns(g, [n for n in names if n in g])

    @staticmethod
    def _scaling(g):
        measured = {name: {k: h[k][:] for k in h} for name, h in g.items() if isinstance(h, h5py.Group) and name != "points" and not name.startswith("sweep_")}
        return {"attrs": attrs(g), "points": columns(g["points"]), "measured": measured}


def load(paths, progress):
    """Every file, in order; `progress(line)` hears of each. Files of the same name from
    different folders are told apart by their index."""
    runs = []
    for i, path in enumerate(paths, 1):
        progress(f"report: reading {path} ({i}/{len(paths)})")
        runs.append(Run(path))
    names = [r.name for r in runs]
    for i, run in enumerate(runs):
        if names.count(run.name) > 1:
            run.name = f"{i + 1}:{run.name}"
    return runs
