"""`make bench`, last step: docs/benchmarks.md and its charts (docs/bench/*.svg) from the benches' results.

    .venv/bin/python -m bench.pages [--build build] [--docs docs]

Reads what the benches of this run wrote in build/ (bench.json, throughput.json, service-bench.json,
grpc-stream-bench.json, camera-bench.json, bombs.json, stages.json, named-models.json, and their .md
tables); a bench that did not
run leaves its part of the page saying so. Charts: frames per second against window size (the
per-frame function and the window functions through kuiperd), frames per second by transport (nng
host, kuiperd, HTTP, gRPC) and latency p50/p95 by transport. No measuring here: the page is a view.
"""
from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = ("labelImage", "inference")
WINDOWS = (4, 8, 16)
# The input each function's nng row of bench.run timed: a 1080p JPEG, as the other benches send.
NNG_INPUT = {"labelImage": "cat 1080p", "inference": "surface 1080p"}
# build/<name>.json of each bench, and the section its table goes under.
SOURCES = {
    "bench": "Calls, nng and kuiperd one frame at a time, start-up, memory (`python -m bench.run`)",
    "throughput": "Frames per second through kuiperd, per-frame and window functions (`python -m bench.throughput`)",
    "service-bench": "The model service over HTTP and gRPC (`python -m bench.service_bench`)",
    "grpc-stream-bench": "gRPC streams against unary calls (`python -m bench.grpc_stream`)",
    "camera-bench": "Camera to result through kuiperd (`python -m bench.camera_bench`)",
    "bombs": "Crafted inputs (`python -m bench.bombs`)",
    "stages": "CPU time per frame in each stage, per function and transport (`python -m bench.stages`)",
    "named-models": "Models by name: lookup per call, load time, memory (`python -m bench.named_models`)",
}
CHARTS = {
    "frames-per-window.svg": "Frames per second against window size, through kuiperd",
    "frames-per-runtime.svg": "Frames per second in-process by runtime and serving (the floors)",
    "frames-per-transport.svg": "Frames per second by transport",
    "latency.svg": "Latency per frame by transport, p50 and p95",
}
# Chart style: text stays text in the SVG (smaller, searchable), and ids and dates are fixed, so a
# page rewritten from the same numbers is the same file.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "defect-bench", "font.size": 9}
COLORS = {"labelImage": "#1f77b4", "inference": "#d62728"}


def machine() -> dict:
    """The CPU model and the number of cores, from /proc/cpuinfo.

    Returns:
        {"cpu": model name, "cores": logical processors listed}.
    """
    cpu, cores = "unknown CPU", 0
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown CPU":
                cpu = value.strip()
            elif key.strip() == "processor":
                cores += 1
    return {"cpu": cpu, "cores": cores}


def load_results(build: Path) -> tuple[dict, dict]:
    """The results in `build`: ({name: parsed JSON}, {name: its .md table}) for each bench that wrote one."""
    results, tables = {}, {}
    for name in SOURCES:
        if (build / f"{name}.json").exists():
            results[name] = json.loads((build / f"{name}.json").read_text())
        if (build / f"{name}.md").exists():
            tables[name] = (build / f"{name}.md").read_text()
    return results, tables


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def window_rates(results: dict, function: str) -> dict:
    """frames/s through kuiperd by window size (1: the per-frame function), and the box floor."""
    rows = results.get("throughput", {}).get("rows", {}).get(function, {})
    rates = {}
    if "per-frame rule, 1 rule" in rows:
        rates[1] = rows["per-frame rule, 1 rule"]["frames_per_s"]
    for window in WINDOWS:
        row = rows.get(f"window rule, CountWindow({window})")
        if row:
            rates[window] = row["frames_per_s"]
    floor = next((v["frames_per_s"] for k, v in rows.items() if k.startswith("box floor")), None)
    return {"rates": rates, "box_floor": floor}


def transport_rows(results: dict, function: str) -> list[dict]:
    """One row per way a 1080p JPEG reaches the function: {transport, frames_per_s, p50_ms, p95_ms}
    (a figure a bench did not measure is None). One client, one frame at a time, unless the name says."""
    rows = []
    nng = results.get("bench", {}).get("nng", {}).get(function, {}).get(NNG_INPUT[function])
    if nng:
        rows.append({"transport": "nng host, one call at a time (as kuiperd calls)",
                     "frames_per_s": round(1000 / nng["median_ms"], 1), "p50_ms": nng["median_ms"],
                     "p95_ms": nng["p95_ms"]})
    through = results.get("throughput", {}).get("rows", {}).get(function, {})
    per_frame = through.get("per-frame rule, 1 rule")
    if per_frame:
        rows.append({"transport": "kuiperd, per-frame function (4 in flight)", **seconds_row(per_frame)})
    window = through.get("window rule, CountWindow(8)")
    if window:
        rows.append({"transport": "kuiperd, window function, CountWindow(8)", **seconds_row(window)})
    for row in results.get("service-bench", {}).get("rows", []):
        if row["function"] == function and row["transport"] in ("http", "grpc") and row["concurrency"] in (1, 4):
            name = {"http": "HTTP", "grpc": "gRPC unary"}[row["transport"]]
            clients = "1 client" if row["concurrency"] == 1 else f"{row['concurrency']} clients"
            rows.append({"transport": f"{name}, {clients}", "frames_per_s": row["requests_per_s"],
                         "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"]})
    for row in results.get("grpc-stream-bench", {}).get("rows", []):
        if row["function"] == function and row["mode"] == "one stream":
            rows.append({"transport": "gRPC, one stream", "frames_per_s": row["frames_per_s"],
                         "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"]})
    return rows


def seconds_row(row: dict) -> dict:
    """bench.throughput's row (latency in s) in the page's units."""
    return {"frames_per_s": row["frames_per_s"],
            "p50_ms": None if row.get("p50_s") is None else round(row["p50_s"] * 1000, 1),
            "p95_ms": None if row.get("p95_s") is None else round(row["p95_s"] * 1000, 1)}


def save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")


def window_chart(results: dict, path: Path) -> bool:
    """Frames/s against window size, a line per function, its box floor dashed. False: nothing to draw."""
    data = {f: window_rates(results, f) for f in FUNCTIONS}
    if not any(d["rates"] for d in data.values()):
        return False
    figure = Figure(figsize=(6.4, 3.8))
    ax = figure.subplots()
    positions = {1: 0, **{w: i + 1 for i, w in enumerate(WINDOWS)}}
    for function, d in data.items():
        if not d["rates"]:
            continue
        xs = [positions[w] for w in d["rates"]]
        ax.plot(xs, list(d["rates"].values()), marker="o", color=COLORS[function], label=function)
        for x, y in zip(xs, d["rates"].values(), strict=True):
            ax.annotate(f"{y:g}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        if d["box_floor"]:
            ax.axhline(d["box_floor"], color=COLORS[function], linestyle="--", linewidth=1,
                       label=f"{function}: box floor (in-process, best runtime and serving)")
    ax.set_xticks(list(positions.values()),
                  ["per-frame\nfunction", *(f"window\nCountWindow({w})" for w in WINDOWS)])
    ax.set_ylabel("frames per second (1080p JPEG)")
    ax.set_ylim(bottom=0)
    ax.set_title(CHARTS[path.name])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(figure, path)
    return True


def runtime_rows(results: dict, function: str) -> list[dict]:
    """bench.throughput's in-process floors, a row per runtime and serving: {way, frames_per_s}."""
    rows = results.get("throughput", {}).get("rows", {}).get(function, {})
    return [{"way": name.removeprefix("floor, "), "frames_per_s": row["frames_per_s"]}
            for name, row in rows.items() if name.startswith("floor, ")]


def runtime_chart(results: dict, path: Path) -> bool:
    """Horizontal bars, a panel per function, a bar per runtime and serving. False: nothing to draw."""
    data = {f: runtime_rows(results, f) for f in FUNCTIONS}
    data = {f: rows for f, rows in data.items() if rows}
    if not data:
        return False
    figure = Figure(figsize=(7.5, sum(1.2 + 0.4 * len(rows) for rows in data.values())))
    axes = figure.subplots(len(data), 1, squeeze=False,
                           height_ratios=[1.2 + 0.4 * len(rows) for rows in data.values()])[:, 0]
    for ax, (function, rows) in zip(axes, data.items(), strict=True):
        xs = [row["frames_per_s"] for row in rows]
        best = max(xs)
        drawn = ax.barh(range(len(rows)), xs, color=[COLORS[function] if x == best else "#b0b0b0" for x in xs])
        ax.bar_label(drawn, labels=[f"{x:g}" for x in xs], padding=3, fontsize=7)
        ax.set_yticks(range(len(rows)), [row["way"] for row in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, best * 1.25)
        ax.set_xlabel("frames per second (1080p JPEG: decode and model, in-process)")
        ax.set_title(f"{function}: the fastest (coloured) is the box floor")
        ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    save(figure, path)
    return True


def transport_chart(results: dict, path: Path, value: Callable[[dict], list[tuple[str, float | None]]],
                    xlabel: str, log: bool = False) -> bool:
    """Horizontal bars, a panel per function, a bar group per transport. False: nothing to draw."""
    data = {f: transport_rows(results, f) for f in FUNCTIONS}
    data = {f: rows for f, rows in data.items() if rows}
    if not data:
        return False
    height = 1.2 + 0.45 * max(len(rows) for rows in data.values()) * len(value(next(iter(data.values()))[0]))
    figure = Figure(figsize=(7.5, height * len(data)))
    axes = figure.subplots(len(data), 1, squeeze=False)[:, 0]
    for ax, (function, rows) in zip(axes, data.items(), strict=True):
        series = [value(row) for row in rows]
        bar = 0.8 / len(series[0])
        for k in range(len(series[0])):
            name = series[0][k][0]
            ys = [i + (k - (len(series[0]) - 1) / 2) * bar for i in range(len(rows))]
            xs = [s[k][1] or 0 for s in series]
            drawn = ax.barh(ys, xs, height=bar, color=COLORS[function], alpha=1.0 if k == 0 else 0.45,
                            label=name if len(series[0]) > 1 else None)
            ax.bar_label(drawn, labels=[f"{x:g}" if x else "not measured" for x in xs], padding=3, fontsize=7)
        ax.set_yticks(range(len(rows)), [row["transport"] for row in rows])
        ax.invert_yaxis()
        measured = [x for s in series for _, x in s if x]
        if log:  # bars from below the smallest value, room on the right for the labels
            ax.set_xscale("log")
            ax.set_xlim(min(measured) / 2, max(measured) * 4)
        else:
            ax.set_xlim(0, max(measured) * 1.25)
        ax.set_xlabel(xlabel)
        ax.set_title(f"{function}: {CHARTS[path.name][0].lower()}{CHARTS[path.name][1:]}")
        ax.grid(axis="x", alpha=0.3)
        if len(series[0]) > 1:
            ax.legend(fontsize=7, loc="best")
    figure.tight_layout()
    save(figure, path)
    return True


def summary_lines(results: dict) -> list[str]:
    """The headline medians and ratios, each from one bench of this run."""
    lines = []
    for function in FUNCTIONS:
        d = window_rates(results, function)
        rates, floor = d["rates"], d["box_floor"]
        if 1 in rates and len(rates) > 1:
            best = max((w for w in rates if w > 1), key=lambda w: rates[w])
            lines.append(f"- **{function} through kuiperd**: the per-frame function {rates[1]} frames/s; "
                         f"the window function at CountWindow({best}) {rates[best]} frames/s, "
                         f"{ratio(rates[best], rates[1])}x the per-frame function"
                         + (f" and {ratio(rates[best], floor)}x the box floor ({floor} frames/s)." if floor else "."))
        kept = results.get("throughput", {}).get("rows", {}).get(function, {}).get("picked by the plugin")
        if kept:
            lines.append(f"- **{function}, what the plugin's measurement at load kept**: per frame "
                         f"{kept['per-frame']}; window {kept['window']} (docs/configuration.md: `label.runtime`, "
                         "`*.threads`, `batch.serving`).")
    bench = results.get("bench", {})
    for function in FUNCTIONS:
        nng = bench.get("nng", {}).get(function, {}).get(NNG_INPUT[function])
        call = bench.get("call", {}).get(function, {}).get(NNG_INPUT[function])
        if nng and call:
            lines.append(f"- **{function} over nng** ({NNG_INPUT[function]} JPEG): median {nng['median_ms']} ms a "
                         f"call, {ratio(nng['median_ms'], call['median_ms'])}x the same call in Python "
                         f"({call['median_ms']} ms).")
    service = results.get("service-bench", {}).get("rows", [])
    for function in FUNCTIONS:
        parts = []
        for transport, name in (("http", "HTTP"), ("grpc", "gRPC unary")):
            c1 = next((r for r in service if (r["transport"], r["function"], r["concurrency"]) ==
                       (transport, function, 1)), None)
            c4 = next((r for r in service if (r["transport"], r["function"], r["concurrency"]) ==
                       (transport, function, 4)), None)
            if c1 and c4:
                parts.append(f"{name} {c1['requests_per_s']} requests/s with 1 client, {c4['requests_per_s']} "
                             f"with 4 ({ratio(c4['requests_per_s'], c1['requests_per_s'])}x)")
        if parts:
            lines.append(f"- **{function} as a service**: " + "; ".join(parts) + ".")
    for row in results.get("grpc-stream-bench", {}).get("rows", []):
        if row["mode"] == "one stream":
            lines.append(f"- **{row['function']} as one gRPC stream**: {row['frames_per_s']} frames/s, "
                         f"{row['over_unary']}x unary calls one at a time.")
    for row in results.get("camera-bench", {}).get("rows", []):
        lines.append(f"- **camera, {row['path']}, `{row['rule']}`**: {row['results_per_s']} results/s, "
                     f"latency median {row['latency_p50_ms']} ms.")
    return lines


def load_note(results: dict) -> str:
    """How busy the machine was, from the load averages the benches noted (none: "")."""
    loads = [r.get("meta", r).get(key) for r in results.values() if isinstance(r, dict)
             for key in ("load_before", "load_after")]
    loads = [load for load in loads if load is not None]
    return f" Load average during the run: {min(loads)} to {max(loads)}." if loads else ""


def render(results: dict, tables: dict, docs: Path, machine_info: dict, date: str) -> Path:
    """Write docs/benchmarks.md and the charts under docs/bench/ from one run's results.

    Args:
        results: {bench name (a key of SOURCES): its build/<name>.json, parsed}; any may be missing.
        tables: {bench name: its build/<name>.md}, put under the page's tables; any may be missing.
        docs: the folder the page goes in; the charts go in its bench/ subfolder.
        machine_info: {"cpu": model name, "cores": count}, as machine() reads them.
        date: the day of the run, as the page states it.

    Returns:
        The page's path.
    """
    charts_dir = docs / "bench"
    charts_dir.mkdir(parents=True, exist_ok=True)
    with rc_context(STYLE):
        drawn = {
            "frames-per-window.svg": window_chart(results, charts_dir / "frames-per-window.svg"),
            "frames-per-runtime.svg": runtime_chart(results, charts_dir / "frames-per-runtime.svg"),
            "frames-per-transport.svg": transport_chart(
                results, charts_dir / "frames-per-transport.svg", lambda r: [("frames/s", r["frames_per_s"])],
                "frames per second (1080p JPEG)"),
            "latency.svg": transport_chart(
                results, charts_dir / "latency.svg", lambda r: [("p50", r["p50_ms"]), ("p95", r["p95_ms"])],
                "ms per frame (log scale)", log=True),
        }
    for name, ok in drawn.items():
        if not ok:  # no stale chart from an earlier run beside this run's page
            (charts_dir / name).unlink(missing_ok=True)
    out = ["# Benchmarks", "",
           "Written by `make bench` (`python -m bench.pages`, from the results the benches wrote in `build/`); "
           "not edited by hand.", "",
           f"**Machine**: {machine_info['cpu']}, {machine_info['cores']} cores (from /proc/cpuinfo). "
           f"**Run of** {date}." + load_note(results), "",
           "The numbers compare only within one run: the benches share the machine with whatever else runs on "
           "it, so a figure from another run or another machine is not comparable. Every figure is a median "
           "(of calls, or of rounds); latencies are the median (p50) and the p95 (nearest rank: the smallest "
           "sample with at least 95% of the samples at or below it, the one definition every bench and test "
           "uses, tests/support/stats.py). Frames are 1080p JPEGs, each different from the one before.", "",
           "## Summary", ""]
    lines = summary_lines(results)
    out += lines or ["No bench results in build/: run `make bench`."]
    out += ["", "## Charts", ""]
    for name, title in CHARTS.items():
        out += [f"### {title}", ""]
        out += [f"![{title}](bench/{name})" if drawn[name] else
                f"Not drawn: this run measured none of its figures ({name})."]
        out.append("")
    out += ["Transports: *nng host* is the plugin started from build/defect.zip and called over nng as kuiperd "
            "calls it, one call at a time; *kuiperd* rows go through mosquitto and a real kuiperd rule (window "
            "latency includes the window's fill); *HTTP* and *gRPC* are the model service (service/) on "
            "127.0.0.1 with its clients on the same machine.", "", "## Tables", ""]
    for name, title in SOURCES.items():
        out += [f"### {title}", ""]
        if name in tables:
            # The bench's own tables, without its title, its headings below this page's.
            text = tables[name].strip()
            if text.startswith("## "):
                text = text.partition("\n")[2].strip()
            out.append(text.replace("\n## ", "\n#### "))
        else:
            out.append(f"Not run in this run (no build/{name}.md).")
        out.append("")
    page = docs / "benchmarks.md"
    page.write_text("\n".join(out))
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=REPO / "build", help="where the benches wrote their results")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the page goes")
    args = parser.parse_args()
    results, tables = load_results(args.build)
    dates = [r["meta"]["date"] if "meta" in r else r.get("date") for r in results.values() if isinstance(r, dict)]
    date = min((d[:10] for d in dates if d), default=datetime.date.today().isoformat())
    page = render(results, tables, args.docs, machine(), date)
    print(f"wrote {page.relative_to(REPO) if page.is_relative_to(REPO) else page} and its charts "
          f"({', '.join(sorted(p.name for p in (args.docs / 'bench').glob('*.svg')))})")


if __name__ == "__main__":
    main()
