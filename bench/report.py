"""The figures of `make bench`: medians over runs, the table, the JSON, and the change since
the previous JSON of the same mode."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Per run: {key: {"direct": float | None, "gateway": float}}.
Run = dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    # added: gateway - direct (ms); ratio: gateway / direct; value: the gateway's figure;
    # count: a total over every run (failures).
    kind: str
    goal: str = ""
    meets: Callable[[float], bool] | None = None


def rows(streams: tuple[int, int]) -> list[Row]:
    small, large = streams
    return [
        Row("latency_c1_p50", "latency c=1 p50 (ms)", "added", "≤ +2 ms", lambda v: v <= 2),
        Row("latency_c1_p99", "latency c=1 p99 (ms)", "added", "≤ +10 ms", lambda v: v <= 10),
        Row("cpu_c1", "gateway CPU per call c=1 (ms)", "value", "≤ 1.5 ms", lambda v: v <= 1.5),
        Row(
            "cpu_c32_w1",
            "gateway CPU per call c=32, -w 1 (ms)",
            "value",
            "≤ 1.5 ms",
            lambda v: v <= 1.5,
        ),
        Row("cpu_c32_w2", "gateway CPU per call c=32, -w 2 (ms)", "value"),
        Row("rps_c32_w1", "throughput c=32, -w 1 (req/s)", "ratio"),
        Row(
            "rps_c32_w2",
            "throughput c=32, -w 2 (req/s)",
            "ratio",
            "≥ 50 % of direct",
            lambda v: v >= 0.5,
        ),
        Row("call_errors", "calls failed or not 200 (all runs)", "count", "0", lambda v: v == 0),
        Row(f"ttfb_{small}_p50", f"{small} paced streams, TTFB p50 (ms)", "added"),
        Row(
            f"ttfb_{small}_p99",
            f"{small} paced streams, TTFB p99 (ms)",
            "added",
            "≤ +50 ms",
            lambda v: v <= 50,
        ),
        Row(f"failed_{small}", f"{small} paced streams, failed (all runs)", "count"),
        Row(f"cpu_stream_{small}", f"gateway CPU per stream, {small} streams (ms)", "value"),
        Row(f"ttfb_{large}_p50", f"{large} paced streams, TTFB p50 (ms)", "added"),
        Row(
            f"ttfb_{large}_p99",
            f"{large} paced streams, TTFB p99 (ms)",
            "added",
            "≤ +50 ms",
            lambda v: v <= 50,
        ),
        Row(
            f"failed_{large}",
            f"{large} paced streams, failed (all runs)",
            "count",
            "0 failed",
            lambda v: v == 0,
        ),
        Row(f"cpu_stream_{large}", f"gateway CPU per stream, {large} streams (ms)", "value"),
        Row("rss_idle", "gateway RSS -w 2, idle (MB)", "value"),
        Row("rss_peak", f"gateway RSS -w 2, peak in {large} streams (MB)", "value"),
        # Diagnostics: a load client near 100 % of a core is itself the limit.
        Row("client_cpu_c32_w1", "load client CPU, c=32 -w 1 (% of a core)", "value"),
        Row("client_cpu_c32_w2", "load client CPU, c=32 -w 2 (% of a core)", "value"),
        Row(f"client_cpu_{large}", f"load client CPU, {large} streams (% of a core)", "value"),
        Row("others_cpu", "CPU used by other processes (cores)", "value"),
    ]


def _figure(row: Row, values: dict[str, float | None]) -> float | None:
    """The figure a row is judged and compared on, for one run."""
    direct, gateway = values.get("direct"), values.get("gateway")
    if gateway is None:
        return None
    if row.kind == "added":
        return None if direct is None else gateway - direct
    if row.kind == "ratio":
        return gateway / direct if direct else None
    return gateway


def summarize(spec: list[Row], runs: list[Run]) -> dict[str, dict]:
    """Per row: the median direct and gateway figures, and the median over runs of the
    per-run comparison (gateway - direct, or gateway / direct): both sides of one run share
    the machine's state at the time, so the comparison is taken within a run."""
    out: dict[str, dict] = {}
    for row in spec:
        per_run = [run[row.key] for run in runs if row.key in run]
        if not per_run:
            continue

        def side(name: str, per_run=per_run) -> list[float]:
            return [v[name] for v in per_run if v.get(name) is not None]

        figures = [f for v in per_run if (f := _figure(row, v)) is not None]
        combine = sum if row.kind == "count" else statistics.median
        entry = {
            "label": row.label,
            "kind": row.kind,
            "goal": row.goal,
            "direct": combine(side("direct")) if side("direct") else None,
            "gateway": combine(side("gateway")) if side("gateway") else None,
            "figure": combine(figures) if figures else None,
            "runs": {"direct": side("direct"), "gateway": side("gateway"), "figure": figures},
        }
        entry["meets_goal"] = (
            row.meets(entry["figure"]) if row.meets and entry["figure"] is not None else None
        )
        out[row.key] = entry
    return out


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return ""
    if kind == "count" or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def _shown(entry: dict, value: float | None) -> str:
    """A comparison figure as the table shows it."""
    if value is None:
        return ""
    if entry["kind"] == "added":
        return f"{value:+.2f} ms"
    if entry["kind"] == "ratio":
        return f"{value:.0%}"
    return _number(value, entry["kind"])


def _change(entry: dict, before: dict | None) -> tuple[str, str]:
    if not before or before.get("figure") is None or entry["figure"] is None:
        return "", ""
    old, new = before["figure"], entry["figure"]
    if entry["kind"] == "added":
        delta = f"{new - old:+.2f} ms"
    elif entry["kind"] == "ratio":
        delta = f"{(new - old) * 100:+.0f} pts"
    elif entry["kind"] == "count":
        delta = f"{new - old:+.0f}"
    else:
        delta = f"{new - old:+.2f}" + (f" ({new / old - 1:+.0%})" if old else "")
    return _shown(entry, old), delta


def table(summary: dict[str, dict], previous: dict | None) -> str:
    head = ("measure", "direct", "gateway", "vs direct", "range (runs)", "goal", "met")
    head += ("previous", "change")
    lines = [head]
    prev_rows = (previous or {}).get("rows", {})
    for key, entry in summary.items():
        figures = entry["runs"]["figure"]
        spread = ""
        if entry["kind"] != "count" and len(figures) > 1:
            spread = f"{_shown(entry, min(figures))} … {_shown(entry, max(figures))}"
        met = {True: "yes", False: "NO", None: ""}[entry["meets_goal"]]
        compared = "" if entry["kind"] == "value" else _shown(entry, entry["figure"])
        lines.append(
            (
                entry["label"],
                _number(entry["direct"], entry["kind"]),
                _number(entry["gateway"], entry["kind"]),
                compared,
                spread,
                entry["goal"],
                met,
                *_change(entry, prev_rows.get(key)),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write(paths: list[Path], document: dict) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
