"""The report's text: Markdown with its tables and charts, and the same as one self-contained
HTML page (the charts embedded, no external resource)."""
import base64
import html
import json
import os
import re

import numpy as np

METHOD = """\
- busbw: algbw × the collective's factor (nccl-tests): all_reduce 2(n−1)/n; reduce_scatter,
  all_gather, alltoall (n−1)/n; broadcast, sendrecv 1. algbw = bytes ÷ time, time = the series'
  `-a` pick (default: the mean over ranks) of each rank's mean launch time; p50/p99 over every
  rank's every launch (`iteration_time_us`).
- SFT: tokens/s per GPU = Σ tokens ÷ Σ step time over the steps after the warm-up; model
  FLOPs per token = 6N + 12·L·d·T (N: parameters in matrix multiplies, L layers, d width, T
  sequence); MFU = tokens/s × FLOPs per token ÷ the peak in the file (`peak_flops`: the dense
  bf16 peak of one H100/H200 SXM, 989 TFLOP/s).
- Energy: J per token = Σ every rank's energy-counter rise over the measured steps ÷ Σ their
  tokens; mean power = energy ÷ the time between the readings.
- Scaling: per sub-world, tokens per GPU over the measured steps ÷ Σ each step's slowest rank's
  time, the median over the sub-worlds (one per GPU at size 1); efficiency = that ÷ the
  smallest measured size's (weak: per GPU; strong: speed-up ÷ GPU ratio, the same ratio at one
  global batch).
- Verify: value = median over repetitions of work ÷ seconds, judged against the median of the
  other GPUs or hosts and the reference table in the file.
"""


def fmt(value, digits=1):
    """A table cell: numbers to `digits` decimals with thousands separators, NaN/None as –."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):,.{digits}f}"
    return str(value).replace("|", "/")


def table(rows, columns):
    """A Markdown table of `rows` (dicts or a DataFrame) with `columns` [(header, key, digits)]."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(fmt(r.get(k), d) for _, k, d in columns) + " |")
    return "\n".join(lines) + "\n"


def image(path, out_dir, caption):
    return f"![{caption}]({os.path.relpath(path, out_dir)})\n"


def to_html(markdown, out_dir, title):
    """Our Markdown subset (headings, paragraphs, lists, numbered lists, tables, images, inline
    code and bold) as one page with every image inlined as a data URI."""
    body, lines, i = [], markdown.splitlines(), 0
    inline = lambda t: re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(t)))
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, rest = rows[0], rows[2:]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
            continue
        elif m := re.match(r"!\[(.*)\]\((.*)\)", line):
            with open(os.path.join(out_dir, m.group(2)), "rb") as f:
                data = base64.b64encode(f.read()).decode()
            body.append(f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"><figcaption>{html.escape(m.group(1))}</figcaption></figure>')
        elif line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or lines[i].startswith("  ")):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            body.append("<ul>" + "".join(f"<li>{inline(t)}</li>" for t in items) + "</ul>")
            continue
        elif re.match(r"\d+\. ", line):
            items = []
            while i < len(lines) and re.match(r"\d+\. ", lines[i]):
                items.append(lines[i].split(". ", 1)[1])
                i += 1
            body.append("<ol>" + "".join(f"<li>{inline(t)}</li>" for t in items) + "</ol>")
            continue
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px}" \
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}code{background:#f4f4f4}"
    return f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def system(runs):
    """Hosts, GPUs, software, NCCL environment, command line and commit of each file."""
    out = ""
    for run in runs:
        m = run.meta
        hosts = sorted(set(run.ranks.get("host", [])))
        gpus = sorted(set(run.ranks.get("gpu_name", [])))
        env = json.loads(m.get("nccl_env", "{}") or "{}")
        out += (f"- **{run.name}**{' (partial: the run did not finish)' if run.partial else ''}: suite `{m.get('suite')}`, {m.get('world_size')} rank(s) on "
                f"{len(hosts)} host(s) ({', '.join(hosts[:8])}{' …' if len(hosts) > 8 else ''}); GPUs {', '.join(gpus) or 'none'}; h200-mpibench {m.get('version')} "
                f"({m.get('git_commit')}), NCCL {m.get('nccl_version')}, CUDA driver {m.get('cuda_driver_version')} ({m.get('driver_version')}), "
                f"{m.get('mpi_version')}; NCCL environment {', '.join(f'{k}={v}' for k, v in env.items()) or 'none set'}; started {m.get('start_utc')}; "
                f"exit code {m.get('exit_code', '–')}; command `{m.get('command_line')}`\n")
    return out
