"""Command line of the load-test tools (called by scripts/scale_test.sh; usable by hand).

python -m loadtest step RUN_DIR [--arrival-rate R]  one run's steady-state figures, one line
python -m loadtest max RESULTS_DIR SERIES       the series' maximum (req/s) and its threads, or 0 0
python -m loadtest report RESULTS_DIR           write summary.csv/.md, steps.csv, plots; print
python -m loadtest monitor --out FILE GROUP...  sample CPU (GROUP = NAME=PID or NAME=PID:TEXT)
python -m loadtest reset-db MONGO_URI           empty the database the URI names
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest import cpu, report, samples


def _step(args) -> int:
    figures = samples.figures_of_run(args.run_dir, args.settle_ms, args.arrival_rate)
    if figures is None:
        print("no steady-state samples")
        return 1
    print(
        f"{figures.throughput:.1f} req/s ok, sent {figures.sent_rate:.1f}/s, p50 {figures.p50_ms:.0f} ms, "
        f"p95 {figures.p95_ms:.0f} ms, p99 {figures.p99_ms:.0f} ms, errors {figures.error_rate:.2%} "
        f"over {figures.seconds:.1f} s" + ("" if figures.qualifies else "  (cannot count as a maximum)")
    )
    return 0


def _max(args) -> int:
    runs = report.load_runs(Path(args.results_dir), args.settle_ms)
    runs = [run for run in runs if run.series == args.series]
    maximum = next(iter(report.find_maxima(runs)), None)
    print(f"{maximum.run.measured.throughput:.1f} {maximum.run.threads}" if maximum and maximum.run else "0 0")
    return 0


def _report(args) -> int:
    results_dir = Path(args.results_dir)
    maxima = report.build(results_dir, args.settle_ms, plots=not args.no_plots)
    print("\n".join(report.summary_table(maxima)))
    info = report.read_info(results_dir)
    cpu_lines = report.cpu_table(maxima, info)
    if len(cpu_lines) > 2:
        print()
        print("\n".join(cpu_lines))
    print(f"\nreport: {results_dir / 'summary.md'}")
    return 0


def _monitor(args) -> int:
    groups = [cpu.Group.parse(spec) for spec in args.groups]
    cpu.monitor(groups, Path(args.out), args.interval, args.max_seconds)
    return 0


def _reset_db(args) -> int:
    """Empty the database but keep what the services set up at their start: a collection
    with indexes of its own is emptied (its indexes stay), any other one is dropped (the
    chat servers recreate the lobby on the next request)."""
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(args.uri, serverSelectionTimeoutMS=5000)
    try:
        database = client.get_default_database()
        for name in database.list_collection_names():
            if set(database[name].index_information()) - {"_id_"}:
                database[name].delete_many({})
            else:
                database.drop_collection(name)
    finally:
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step", help="one run's steady-state figures")
    step.add_argument("run_dir")
    step.add_argument("--arrival-rate", type=float, help="the open model's offered rate (req/s)")
    step.set_defaults(run=_step)
    maximum = commands.add_parser("max", help="a series' maximum throughput")
    maximum.add_argument("results_dir")
    maximum.add_argument("series")
    maximum.set_defaults(run=_max)
    build = commands.add_parser("report", help="write the report files of a results directory")
    build.add_argument("results_dir")
    build.add_argument("--no-plots", action="store_true")
    build.set_defaults(run=_report)
    for command in (step, maximum, build):
        command.add_argument(
            "--settle-ms",
            type=int,
            default=samples.SETTLE_MS,
            help="start the steady window this long after the last setup request",
        )
    monitor = commands.add_parser("monitor", help="sample CPU of process groups until SIGTERM")
    monitor.add_argument("--out", required=True)
    monitor.add_argument("--interval", type=float, default=1.0)
    monitor.add_argument("--max-seconds", type=float, default=7200)
    monitor.add_argument("groups", nargs="*")
    monitor.set_defaults(run=_monitor)
    reset = commands.add_parser("reset-db", help="empty the database a MongoDB URI names, keeping indexes")
    reset.add_argument("uri")
    reset.set_defaults(run=_reset_db)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
