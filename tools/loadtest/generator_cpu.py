"""The load generator's own cost: CPU of the JMeter JVM per successful request, measured on
fixed-rate open-model runs of the plan (scripts/jmeter-run.sh) like the scale test's steps.

Each run's JVM is sampled with psutil while it runs; the figure is its CPU over the run's
steady window (tools/loadtest/samples.py, the window the scale test's `JMeter ms/req` uses)
divided by the successful requests of that window. The JVM's whole CPU (start, setup, the
HTTP dashboard until its last sample) per successful request is printed beside it.

    python -m tools.loadtest.generator_cpu --chat-url http://127.0.0.1:5000 \
        --login-url http://127.0.0.1:4100 --rates "50 100 200" --out /tmp/gen [-- -Jname=value ...]

JVM_ARGS and HEAP in the environment reach the JMeter launcher (scripts/jmeter-install.sh).
Rows are appended to OUT/generator_cpu.csv, so variants measured one after the other (give
each a --label) end up side by side.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from tools.loadtest import cpu
from tools.loadtest.samples import figures_of_run
from tools.loadtest.search import ROOT, SETUP_SECONDS, WORKLOADS, _split, ensure_rooms, pool_size

COLUMNS = [
    "label",
    "workload",
    "offered",
    "threads",
    "ok_rate",
    "window_s",
    "jmeter_cores",
    "ms_per_request",
    "jvm_cpu_s",
    "ok_requests_all",
    "jvm_ms_per_request_all",
    "run_dir",
]


def jvm_cpu_seconds(root_pid: int) -> tuple[float, dict[int, float]]:
    """Now, and pid -> CPU seconds of the JMeter JVMs below root_pid."""
    table = cpu._process_table()
    group = cpu.Group("jmeter", root_pid, "ApacheJMeter")
    return time.time(), {pid: table[pid][1] for pid in cpu.members(group, table)}


def run_once(props: list[str], run_dir: Path, interval: float) -> tuple[int, dict]:
    """scripts/jmeter-run.sh, its JVM's CPU sampled every `interval` seconds meanwhile."""
    series: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with open(run_dir / "console.log", "w") as console:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "jmeter-run.sh"), *props, "--out", str(run_dir)],
            stdout=console,
            stderr=subprocess.STDOUT,
        )
        try:
            while process.poll() is None:
                moment, used = jvm_cpu_seconds(process.pid)
                for pid, seconds in used.items():
                    series.setdefault(("jmeter", pid), []).append((moment, seconds))
                time.sleep(interval)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait()
    return process.returncode, series


def ok_requests(run_dir: Path) -> int:
    """Successful chat requests (post message, read messages) of the whole run."""
    with open(run_dir / "results.csv", newline="") as handle:
        return sum(
            1
            for row in csv.DictReader(handle)
            if row.get("label") in ("post message", "read messages") and row.get("success") == "true"
        )


def measure(args: argparse.Namespace, rate: float, run_dir: Path) -> dict:
    workload = WORKLOADS[args.workload]
    if args.reset_uri:
        from tools.loadtest.__main__ import reset_database

        reset_database(args.reset_uri)
    ensure_rooms(args.chat_url, args.login_url, workload)
    scheme, chat_host, chat_port = _split(args.chat_url)
    _, login_host, login_port = _split(args.login_url)
    threads = pool_size(rate)
    props = [
        *workload.properties(),
        f"-Jprotocol={scheme}",
        f"-Jchat_host={chat_host}",
        f"-Jchat_port={chat_port}",
        f"-Jlogin_host={login_host}",
        f"-Jlogin_port={login_port}",
        f"-Jarrival_seconds={args.duration}",
        f"-Jsetup_timeout={SETUP_SECONDS}",
        f"-Jduration={args.duration + SETUP_SECONDS}",
        "-Jrampup=2",
        "-Jmodel=open",
        f"-Jarrival_rate={rate:.2f}",
        f"-Jopen_threads={threads}",
        *args.plan_properties,
    ]
    status, series = run_once(props, run_dir, args.interval)
    row = {"label": args.label, "workload": workload.name, "offered": f"{rate:g}", "threads": threads}
    row["run_dir"] = str(run_dir)
    figures = figures_of_run(run_dir, arrival_rate=rate, arrival_s=args.duration) if status == 0 else None
    if figures is None or not series:
        return row | {"ok_rate": "failed"}
    cores = cpu.cores_in_window(series, figures.window_start_ms / 1000, figures.window_end_ms / 1000, args.interval)
    jmeter_cores = cores.get("jmeter", 0.0)
    total = sum(points[-1][1] for points in series.values())
    all_ok = ok_requests(run_dir)
    return row | {
        "ok_rate": f"{figures.throughput:.1f}",
        "window_s": f"{figures.seconds:.1f}",
        "jmeter_cores": f"{jmeter_cores:.3f}",
        "ms_per_request": f"{jmeter_cores * 1000 / figures.throughput:.2f}" if figures.throughput else "",
        "jvm_cpu_s": f"{total:.1f}",
        "ok_requests_all": all_ok,
        "jvm_ms_per_request_all": f"{total * 1000 / all_ok:.2f}" if all_ok else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadtest.generator_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--chat-url", required=True, help="the chat entry point, e.g. http://127.0.0.1:5000")
    parser.add_argument("--login-url", required=True, help="the login service, e.g. http://127.0.0.1:4100")
    parser.add_argument("--rates", default="50 100 200", help="offered req/s, one run each (default: %(default)s)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of arrivals per run (default: 10)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="hot")
    parser.add_argument("--label", default=os.environ.get("JVM_ARGS", "") or "default", help="the variant's name")
    parser.add_argument("--reset-uri", default="", help="MongoDB URI emptied before every run")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between CPU samples")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("plan_properties", nargs="*", help="after --: -Jname=value for every run")
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split()]
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "generator_cpu.csv"
    new = not table.is_file()
    with open(table, "a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        for rate in rates:
            name = f"{args.label}-{rate:g}-{time.strftime('%H%M%S')}".replace(" ", "_").replace("/", "_")
            run_dir = args.out / "runs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            row = measure(args, rate, run_dir)
            writer.writerow(row)
            handle.flush()
            print(" | ".join(str(row.get(column, "")) for column in COLUMNS[:-1]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
