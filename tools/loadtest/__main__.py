"""Command line of the load-test tools (called by scripts/scale_test.sh; usable by hand).

python -m tools.loadtest summary RESULTS_CSV          per label: samples, errors, mean, p95, rate
python -m tools.loadtest step RUN_DIR [--arrival-rate R]  one run's steady-state figures, one line
python -m tools.loadtest max RESULTS_DIR SERIES       the series' maximum (req/s) and its threads, or 0 0
python -m tools.loadtest report RESULTS_DIR           write summary.csv/.md, steps.csv, plots; print
python -m tools.loadtest monitor --out FILE GROUP...  sample CPU (GROUP = NAME=PID or NAME=PID:TEXT)
python -m tools.loadtest reset-db MONGO_URI [--compact]  empty the database the URI names
python -m tools.loadtest search --out DIR --series S --chat URL --login URL ...
                                                the SLO search of one series and workload
python -m tools.loadtest battle --target URL --login URL ...   pre-flight, search, score card
python -m tools.loadtest compare CARD.json ...        leaderboard of score cards, side by side
python -m tools.loadtest timeline RESULTS_DIR --prometheus URL
                                                record the runs' span from Prometheus (timeline.csv)
python -m tools.loadtest keep RESULTS_DIR DEST [--run RUN ...]
                                                copy the report to commit, with the runs named whole
python -m tools.loadtest repeats DIR DIR ... [--tolerance 0.1] [--out FILE]
                                                runs of the scale test side by side, with their spread
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.loadtest import battle, cpu, keep, repeats, report, samples, search, timeline


def _summary(args) -> int:
    print(samples.label_table(samples.read_samples(args.results_csv)))
    return 0


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
    info = report.read_info(results_dir)
    slo = report.slo_maxima(results_dir, report.load_runs(results_dir, args.settle_ms), info)
    if slo:
        print("\n".join(report.slo_table(slo, info)))
        print(f"\nreport: {results_dir / 'summary.md'}")
        return 0
    print("\n".join(report.summary_table(maxima)))
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


def _timeline(args) -> int:
    results_dir = Path(args.results_dir)
    span = timeline.span(results_dir)
    if span is None:
        print(f"{results_dir}/runs.csv records no run's start and end", file=sys.stderr)
        return 1
    if not timeline.available(args.prometheus):
        print(f"no Prometheus answers at {args.prometheus}", file=sys.stderr)
        return 1
    timeline.wait_scraped(args.prometheus, span[1])
    samples_kept = timeline.record(args.prometheus, span[0], span[1], results_dir)
    print(f"timeline: {samples_kept} samples from {args.prometheus} in {results_dir / timeline.CSV}")
    return 0


def _keep(args) -> int:
    results_dir = Path(args.results_dir)
    runs = args.whole_runs or [run for run in [keep.headline_run(results_dir)] if run]
    kept = keep.keep(results_dir, Path(args.dest), runs)
    print(f"kept {results_dir} in {args.dest}, whole: {', '.join(kept) or 'no run'}")
    return 0


def _reset_db(args) -> int:
    reset_database(args.uri, compact=args.compact)
    return 0


def reset_database(uri: str, compact: bool = False) -> None:
    """Empty the database but keep what the migration command set up: the schema mark stays,
    a collection with indexes of its own is emptied (its indexes stay), any other one is
    dropped (the chat servers recreate the lobby on the next request).

    compact: then `compact` each emptied collection. FerretDB on PostgreSQL runs VACUUM ANALYZE
    for it: otherwise the deleted rows stay in the tables and their indexes until autovacuum
    comes by, at a moment of its own, perhaps in the middle of the next run. (On SQLite,
    PRAGMA incremental_vacuum: a delete there leaves no dead rows behind, so the scale test
    compacts on PostgreSQL alone.)"""
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        database = client.get_default_database()
        for name in database.list_collection_names():
            if name == "schema_marks":
                continue
            if set(database[name].index_information()) - {"_id_"}:
                database[name].delete_many({})
                if compact:
                    database.command("compact", name)
            else:
                database.drop_collection(name)
    finally:
        client.close()


def objective_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slo-p99", type=float, default=250.0, help="p99 objective, ms (250)")
    parser.add_argument("--max-errors", type=float, default=1.0, help="errors must stay under this %% (1)")
    parser.add_argument("--min-sent", type=float, default=99.0, help="sent must reach this %% of offered (99)")


def objective_of(args) -> search.Objective:
    return search.Objective(args.slo_p99, args.max_errors / 100, args.min_sent / 100)


def _search(args) -> int:
    out = Path(args.out)
    search.ensure_runs_file(out)
    workload = search.WORKLOADS[args.workload]
    objective = objective_of(args)
    plan = search.Plan(
        start_rate=args.start_rate,
        growth=args.growth,
        confirmations=args.confirmations,
        misses=args.misses,
        max_steps=args.max_steps,
    )
    runner = search.Runner(
        out,
        args.series,
        args.servers,
        args.chat.rstrip("/"),
        args.login.rstrip("/"),
        workload,
        objective,
        duration=args.duration,
        reset_uri=args.reset_uri or "",
        reset_compact=args.reset_compact,
        plan_properties=args.plan_properties,
        threads=args.threads,
    )
    if args.warm_up:  # one run at the start rate, recorded in runs.csv only
        runner(args.start_rate, "warmup")
        print("0.00")
        return 0
    result = search.search(runner, plan, objective)
    search.write_record(search.result_record(result, args.series, args.servers, workload, plan), out)
    print(f"{result.maximum or 0:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="a JMeter results.csv per label (scripts/jmeter-run.sh)")
    summary.add_argument("results_csv")
    summary.set_defaults(run=_summary)
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
    spans = commands.add_parser("timeline", help="record a results directory's span from Prometheus")
    spans.add_argument("results_dir")
    spans.add_argument("--prometheus", required=True, help="the stack's Prometheus, e.g. http://127.0.0.1:9090")
    spans.set_defaults(run=_timeline)
    kept = commands.add_parser("keep", help="copy a results directory's report, small enough to commit")
    kept.add_argument("results_dir")
    kept.add_argument("dest")
    kept.add_argument(
        "--run",
        action="append",
        dest="whole_runs",
        help="a run to keep whole, dashboard included (default: the headline's)",
    )
    kept.set_defaults(run=_keep)
    reset = commands.add_parser("reset-db", help="empty the database a MongoDB URI names, keeping indexes")
    reset.add_argument("uri")
    reset.add_argument("--compact", action="store_true", help="then compact each emptied collection")
    reset.set_defaults(run=_reset_db)
    find = commands.add_parser("search", help="the SLO search of one series and workload")
    find.add_argument("--out", required=True)
    find.add_argument("--series", required=True)
    find.add_argument("--servers", type=int)
    find.add_argument("--chat", required=True, help="chat entry point URL")
    find.add_argument("--login", required=True, help="login service URL")
    find.add_argument("--workload", choices=sorted(search.WORKLOADS), default="hot")
    find.add_argument("--duration", type=int, default=15, help="seconds per JMeter run (15)")
    find.add_argument("--start-rate", type=float, default=40.0)
    find.add_argument("--growth", type=float, default=1.5)
    find.add_argument("--confirmations", type=int, default=3)
    find.add_argument("--misses", type=int, default=1, help="failed confirmations allowed at a rate (1)")
    find.add_argument("--max-steps", type=int, default=14)
    find.add_argument("--threads", type=int, help="the open model's user pool (default: from the rate)")
    find.add_argument("--reset-uri", help="empty this database before every run")
    find.add_argument(
        "--reset-compact", action="store_true", help="and compact its emptied collections (FerretDB on PostgreSQL)"
    )
    find.add_argument("--warm-up", action="store_true", help="one uncounted run at --start-rate, no search")
    find.add_argument("plan_properties", nargs="*", help="-Jname=value for every run (after --)")
    objective_arguments(find)
    find.set_defaults(run=_search)
    battle.add_commands(commands, objective_arguments, objective_of)
    repeats.add_command(commands)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
