"""scripts/report.py on real files from CPU runs made here (the built binary under mpirun):
every number in report.md's tables recomputed independently from the raw datasets, every PNG
opens and is not blank, every CSV reads back with its documented columns, the HTML needs
nothing outside itself; bad inputs get one line and exit 2."""
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "h200-mpibench")
REPORT = os.path.join(ROOT, "scripts", "report.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from report import CSV_COLUMNS  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def mpirun(ranks, *args):
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", BIN, *args]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 5), r.stdout + r.stderr  # 5: verify may fail on the busy CI host
    return r


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    full, one = str(d / "full.h5"), str(d / "one.h5")
    mpirun(2, "--suite", "full", "--keep-going", "--model", "tiny", "--steps", "4", "--warmup-steps", "1", "-b", "1K", "-e", "64K", "--collectives", "all_reduce,all_gather",
           "--scaling-steps", "3", "--scaling-warmup-steps", "1", "--tolerance-pct", "50", "--link-tolerance-pct", "90", "--out", full)
    mpirun(1, "--suite", "sft", "--model", "tiny", "--steps", "4", "--warmup-steps", "1", "--out", one)
    return full, one


def report(out, *paths):
    return subprocess.run([sys.executable, REPORT, *paths, "-o", str(out)], capture_output=True, text=True, timeout=300)


def md_tables(text):
    """Each Markdown table under its section heading: (section, header, rows)."""
    tables, section, lines = [], None, text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:]
        if lines[i].startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            tables.append((section, block[0], block[2:]))
            continue
        i += 1
    return tables


def number(cell):
    return float(cell.replace(",", "")) if cell not in ("–", "") else float("nan")


def close(cell, value, digits):
    """The cell shows `value` rounded to `digits` decimals."""
    assert cell == "–" if not np.isfinite(value) else abs(number(cell) - round(value, digits)) <= 10 ** -digits, (cell, value)


def table_of(tables, section, first_header):
    found = [t for t in tables if t[0] == section and t[1][0] == first_header]
    assert found, f"no table in {section}"
    _, header, rows = found[0]
    return [dict(zip(header, r)) for r in rows]


def test_every_table_number_is_recomputed_from_the_raw_data(files, tmp_path):
    full, one = files
    r = report(tmp_path, full, one)
    assert r.returncode == 0, r.stderr
    tables = md_tables(open(tmp_path / "report.md").read())
    with h5py.File(full) as f, h5py.File(one) as g:
        by_file = {"full.h5": f, "one.h5": g}
        # SFT: Σ tokens ÷ Σ step time after the warm-up; the memory peak
        for row in table_of(tables, "SFT", "file"):
            s = by_file[row["file"]]["sft"]
            warm = s.attrs["warmup_steps"]
            close(row["tokens/s/GPU"], s["tokens"][warm:].sum() / s["step_s"][warm:].sum(), 0)
            close(row["step s"], s["step_s"][warm:].mean(), 4)
            close(row["peak GiB"], s["peak_memory_bytes"][:].max() / 2**30, 2)
            assert row["measured steps"] == str(len(s["step"]) - warm)
        # Collectives: the largest size out of place, time = mean over ranks, busbw by factor
        for row in table_of(tables, "Collectives", "file"):
            name = {"all_reduce": "float_sum", "all_gather": "float"}[row["collective"]]
            g_ = f["nccl"][row["collective"]][name]
            i = max((k for k in range(len(g_["bytes"])) if not g_["in_place"][k]), key=lambda k: g_["bytes"][k])
            t = g_["rank_time_us"][i].mean()
            close(row["time µs"], t, 1)
            close(row["busbw GB/s"], g_["bytes"][i] / t / 1e3 * g_.attrs["busbw_factor"], 2)
            close(row["p99 µs"], np.percentile(g_["iteration_time_us"][i], 99), 1)
        # Verify: the median of work ÷ seconds
        for row in table_of(tables, "Verify", "file"):
            p = f["verify"]["probes"][row["figure"]]
            k = [s.decode() for s in p["subject"][:]].index(row["GPU or host"])
            secs = p["seconds"][k][np.isfinite(p["seconds"][k])]
            value = np.median(secs * 1e6 / p["work"][k]) if "µs" in p.attrs["unit"] else np.median(p["work"][k] / secs)
            close(row["value"], value, 1)
        # Telemetry: per file and rank, the samples and the means and peaks over them
        for row in table_of(tables, "Telemetry", "file"):
            t = by_file[row["file"]]["telemetry"]
            mine = t["rank"][:] == int(row["rank"])
            assert row["samples"] == f"{mine.sum():,}"
            for header, field, reduce in (("mean power W", "power_w", np.nanmean), ("peak °C", "temp_gpu_c", np.nanmax), ("mean SM clock MHz", "sm_clock_mhz", np.nanmean), ("mean utilisation %", "gpu_util_pct", np.nanmean)):
                values = t[field][:][mine]
                close(row[header], reduce(values) if np.isfinite(values).any() else np.nan, 0)
        # Scaling: per sub-world tokens over Σ each step's slowest rank; efficiency vs size 1
        sc = f["scaling"]
        warm, seq = sc.attrs["warmup_steps"], 64
        rows = table_of(tables, "Scaling", "file")
        assert [r["GPUs"] for r in rows] == ["1", "2", "1", "2"]
        base = {}
        for row in rows:
            raw = sc[f"{row['mode']}_{row['GPUs']}"]["rank_step_s"][warm:]
            size = int(row["GPUs"])
            k = [i for i in range(len(sc["points"]["mode"])) if sc["points"]["mode"][i].decode() == row["mode"] and sc["points"]["ranks"][i] == size][0]
            tokens = sc["points"]["micro_batch"][k] * sc["points"]["grad_accum"][k] * seq * raw.shape[0]
            tps = np.median([tokens / raw[:, c:c + size].max(axis=1).sum() for c in range(0, raw.shape[1], size)])
            close(row["tokens/s/GPU"], tps, 0)
            close(row["efficiency"], tps / base.setdefault(row["mode"], tps), 3)


def test_charts_csvs_and_html(files, tmp_path):
    import matplotlib.image as mpimg

    r = report(tmp_path, *files)
    assert r.returncode == 0, r.stderr
    assert "report: reading" in r.stderr, "progress on stderr"
    pngs = [p for p in os.listdir(tmp_path) if p.endswith(".png")]
    for kind in ("nccl_all_reduce", "sft_steps", "sft_split", "sft_memory", "scaling", "verify", "telemetry_0", "ranks_0"):
        assert f"{kind}.png" in pngs, pngs
    for p in pngs:
        pixels = mpimg.imread(tmp_path / p)
        assert pixels.std() > 0.01, f"{p} is blank"
    for name, columns in CSV_COLUMNS.items():
        frame = pd.read_csv(tmp_path / name)
        assert list(frame.columns) == columns, name
        assert len(frame) > 0, name
    page = open(tmp_path / "report.html").read()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r'(src|href)="(?!data:)', page), "no external resource"


def test_separate_runs_make_a_scaling_table(files, tmp_path):
    full, one = files
    two = tmp_path / "two.h5"
    mpirun(2, "--suite", "sft", "--model", "tiny", "--steps", "4", "--warmup-steps", "1", "--out", str(two))
    r = report(tmp_path / "out", one, str(two))
    assert r.returncode == 0, r.stderr
    text = open(tmp_path / "out" / "report.md").read()
    assert "From separate single-size SFT runs" in text
    assert "has no verify group" in text and "has no nccl sweep" in text


def test_bad_inputs_get_one_line(files, tmp_path):
    full, _ = files
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    foreign = tmp_path / "foreign.h5"
    h5py.File(foreign, "w").close()
    truncated = tmp_path / "cut.h5.partial"
    truncated.write_bytes(open(full, "rb").read()[:4096])
    for path, cause in ((junk, "not an HDF5 file"), (foreign, "not an h200-mpibench results file"), (truncated, "not an HDF5 file")):
        r = report(tmp_path / "out", str(path))
        assert r.returncode == 2, r.stderr
        lines = [l for l in r.stderr.splitlines() if not l.startswith("report: reading")]
        assert len(lines) == 1 and lines[0].startswith("report: error: ") and cause in lines[0], r.stderr
    # A readable .partial (a run that died before its end) is reported, marked partial.
    partial = tmp_path / "died.h5.partial"
    shutil.copy(full, partial)
    with h5py.File(partial, "a") as f:
        del f.attrs["end_utc"]
    r = report(tmp_path / "p", str(partial))
    assert r.returncode == 0, r.stderr
    assert "(partial: the run did not finish)" in open(tmp_path / "p" / "report.md").read()


def test_files_with_some_groups_or_an_unfinished_sft(files, tmp_path):
    full, _ = files
    sweep = tmp_path / "sweep.h5"
    mpirun(2, "--suite", "nccl", "-b", "1K", "-e", "4K", "--collectives", "all_reduce", "--out", str(sweep))
    unfinished = tmp_path / "unfinished.h5.partial"
    shutil.copy(full, unfinished)
    with h5py.File(unfinished, "a") as f:
        for key in [k for k in f["sft"].attrs if k.startswith("summary_")]:
            del f["sft"].attrs[key]
        del f.attrs["end_utc"]
    r = report(tmp_path / "out", str(sweep), str(unfinished))
    assert r.returncode == 0, r.stderr
    text = open(tmp_path / "out" / "report.md").read()
    assert "sweep.h5 has no sft run" in text and "sweep.h5 has no verify group" in text
    sft = table_of(md_tables(text), "SFT", "file")
    assert [row["finished"] for row in sft] == ["no"]


def chromium():
    """Debian's chromium, installed with apt where missing (CI runs as root, as for Slurm)."""
    found = shutil.which("chromium")
    if found is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    return found


def test_the_html_renders_in_a_browser_with_the_network_cut(files, tmp_path):
    import matplotlib.image as mpimg

    r = report(tmp_path / "out", *files)
    assert r.returncode == 0, r.stderr
    page = tmp_path / "out" / "report.html"
    html = page.read_text()
    # Nothing outside the page: no linked or fetched resource, no CSS import or url().
    assert not re.search(r'(src|href)="(?!data:)', html) and "@import" not in html and "url(" not in html
    shot = tmp_path / "shot.png"
    # Every host name resolves to nothing: the page cannot fetch, nor can the browser itself.
    cut = ["--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *cut,
           "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=180, check=True)
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] == 2400 and pixels.std() > 0.05, "the screenshot is blank"
    # The charts drew: a good share of the page is neither white nor text-grey.
    colour = (pixels[..., :3].max(axis=2) - pixels[..., :3].min(axis=2)) > 0.2
    assert colour.mean() > 0.01, colour.mean()
