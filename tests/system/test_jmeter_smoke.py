"""The JMeter plan runs cleanly against the test stack, and the scale-test report reads
runs the way docs/load-testing.md says (steady window, 1 % error rule, percentiles,
speed-up). Benchmarks themselves live in scripts/scale_test.sh, not here."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.lib import harness
from tests.lib.harness import ROOT
from tools.loadtest import cpu, report, samples

ALL_LABELS = set(samples.SETUP_LABELS) | set(samples.STEADY_LABELS)


def host_and_port(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    assert parts.hostname, f"{url} names no host"
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


@pytest.mark.chat
def test_plan_runs_against_the_stack_with_no_errors(stack, tmp_path):
    harness.require_tool("java")  # scripts/setup.sh installs a JDK and Maven when missing
    scheme, chat_host, chat_port = host_and_port(stack.chat_url)
    _, login_host, login_port = host_and_port(stack.login_url)
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            str(ROOT / "scripts" / "jmeter-run.sh"),
            f"-Jprotocol={scheme}",
            f"-Jchat_host={chat_host}",
            f"-Jchat_port={chat_port}",
            f"-Jlogin_host={login_host}",
            f"-Jlogin_port={login_port}",
            "-Jthreads=3",
            "-Jrampup=1",
            # Rounds, not seconds: on a busy machine the users' setup (scrypt) can take all of a
            # short duration and leave no chat request after it. Ten rounds per user after its
            # setup always do; the duration is only a bound.
            "-Jloops=10",
            "-Jduration=300",
            "-Jfollowers=2",
            "-Jfollow_wait=2",
            "-Jfollow_loops=3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )  # the first call may assemble JMeter
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    with open(out / "results.csv", newline="") as results:
        reader = csv.DictReader(results)
        rows = list(reader)
    assert rows, "no sample recorded"
    assert ALL_LABELS | {"follow messages"} <= {row["label"] for row in rows}
    failed = [
        (row["label"], row["responseCode"], row["failureMessage"][:200]) for row in rows if row["success"] != "true"
    ]
    assert failed == []
    # The steady window opens at the end of the last setup, the followers' included. The
    # followers are a thread group of their own whose setup is not ordered with the model's
    # ten rounds: on a busy machine it can end after them and leave no window. The model's
    # users alone always have their rounds after their own setup, however slow the machine
    # (and from its very end: the default settle second could outlast them on a fast one).
    model_run = tmp_path / "closed-model"
    model_run.mkdir()
    with open(model_run / "results.csv", "w", newline="") as model_results:
        writer = csv.DictWriter(model_results, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(row for row in rows if row["threadName"].startswith("closed model "))
    figures = samples.figures_of_run(model_run, settle_ms=0)
    assert figures is not None and figures.requests > 0 and figures.throughput > 0
    assert figures.messages_per_read is not None and 0 <= figures.messages_per_read <= 20  # bounded pages
    assert set(figures.served_by) <= {"chat1", "chat2", "chat3"} and figures.served_by
    assert (out / "dashboard" / "index.html").is_file()


# --- the report, on synthetic runs -------------------------------------------------------------

T0 = 1_800_000_000_000  # epoch ms
WINDOW_START = T0 + 1000 + samples.SETTLE_MS  # setup ends at T0 + 1 s


def synthetic_samples(rate: int, failed: int, seconds: int = 10) -> list[samples.Sample]:
    """Setup until T0 + 1 s, one chat request before the window, then `rate` requests per
    second for exactly `seconds` of steady window, the first `failed` of them failed."""
    rows = [
        samples.Sample("register", T0, 300, True),
        samples.Sample("login", T0 + 300, 300, True),
        samples.Sample("read latest", T0 + 600, 400, True),
        samples.Sample("post message", T0 + 700, 50, True),
    ]  # before the window: left out
    spacing = 1000 // rate
    total = rate * seconds
    for k in range(total):
        label = samples.STEADY_LABELS[k % 2]
        elapsed = spacing if k == total - 1 else 20  # the last one ends the window exactly
        rows.append(samples.Sample(label, WINDOW_START + k * spacing, elapsed, k >= failed))
    return rows


def write_run(run_dir: Path, rows: list[samples.Sample]) -> None:
    run_dir.mkdir(parents=True)
    with open(run_dir / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "timeStamp",
                "elapsed",
                "label",
                "responseCode",
                "responseMessage",
                "threadName",
                "success",
                "failureMessage",
                "bytes",
                "allThreads",
                "Latency",
                "Connect",
            ]
        )
        for row in rows:
            writer.writerow(
                [
                    row.start_ms,
                    row.elapsed_ms,
                    row.label,
                    201 if row.success else 503,
                    "",
                    "closed model 1-1",
                    "true" if row.success else "false",
                    "",
                    100,
                    1,
                    1,
                    0,
                ]
            )


@pytest.mark.fast
def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    assert samples.percentile(values, 50) == 50
    assert samples.percentile(values, 95) == 95
    assert samples.percentile(values, 99) == 99
    assert samples.percentile(values, 100) == 100
    assert samples.percentile([7], 99) == 7
    assert samples.percentile([1, 2, 3, 4], 50) == 2
    assert math.isnan(samples.percentile([], 50))


@pytest.mark.fast
def test_jmeter_run_summary_reports_the_same_nearest_rank_p95():
    """scripts/jmeter-run.sh prints this table: of 100 samples 1..100 ms, p95 is the 95th."""
    run = [samples.Sample("chat GET", 1000 * number, number, number != 7) for number in range(1, 101)]
    label_line = samples.label_table(run).splitlines()[1].split()
    assert label_line[:3] == ["chat", "GET", "100"]  # the label, then samples
    assert label_line[3:6] == ["1", "50.5", "95"]  # errors, mean ms, p95 ms


def test_steady_window_leaves_out_setup_and_counts_successes_per_second():
    figures = samples.step_figures(synthetic_samples(rate=20, failed=2))
    assert figures.window_start_ms == WINDOW_START
    assert figures.seconds == pytest.approx(10.0)
    assert figures.requests == 200  # the post before the window is not among them
    assert figures.errors == 2
    assert figures.throughput == pytest.approx(19.8)
    assert figures.error_rate == pytest.approx(0.01)
    assert not figures.qualifies  # 1 % is not under 1 %
    assert figures.p50_ms == 20 and figures.p99_ms == 20


def test_open_model_window_starts_once_the_setup_backlog_has_gone_out():
    # 10 arrivals/s scheduled from T0; setup ends at T0 + 3 s, so the 40 arrivals due by the
    # end of the settle second go out in a burst (every 5 ms), then one every 100 ms.
    rows = [
        samples.Sample("register", T0, 1500, True),
        samples.Sample("login", T0 + 1500, 1000, True),
        samples.Sample("read latest", T0 + 2500, 500, True),
    ]
    rows += [samples.Sample("post message", T0 + 4000 + i * 5, 20, True) for i in range(45)]
    rows += [samples.Sample("read messages", T0 + 4300 + k * 100, 20, True) for k in range(100)]

    start, _ = samples.steady_window(rows, arrival_rate=10)
    # Caught up (backlog within half a second of arrivals) at the 37th burst request.
    assert start == T0 + 4000 + 36 * 5
    assert samples.step_figures(rows, arrival_rate=10).sent_rate < 11
    # Counting from the settle second on, the burst would inflate the rate.
    assert samples.step_figures(rows).sent_rate > 14
    # A backlog that never drains leaves the window where the setup ended.
    assert samples.steady_window(rows, arrival_rate=100)[0] == T0 + 3000 + samples.SETTLE_MS


def test_a_run_without_chat_requests_has_no_figures():
    assert samples.step_figures([samples.Sample("register", T0, 300, True)]) is None


def test_report_picks_the_best_step_under_one_percent_errors_and_the_speedup(tmp_path):
    steps = [  # series, servers, phase, threads, rate, failed, arrival_rate
        ("servers-1", 1, "warmup", 8, 40, 0, ""),  # a warm-up never counts
        ("servers-1", 1, "closed", 4, 10, 0, ""),
        ("servers-1", 1, "closed", 8, 20, 1, ""),  # 0.5 % errors: 19.9 req/s, the maximum
        ("servers-1", 1, "closed", 16, 25, 5, ""),  # faster, but 2 % errors
        ("servers-1", 1, "open", 16, 14, 0, "14"),
        ("servers-2", 2, "closed", 8, 40, 0, ""),  # 40 req/s: speed-up 40 / 19.9
        ("servers-2", 2, "closed", 16, 50, 5, ""),  # exactly 1 % errors: not under 1 %
    ]
    with open(tmp_path / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "servers", "phase", "threads", "arrival_rate", "fraction", "dir", "status"])
        for series, servers, phase, threads, rate, failed, arrival in steps:
            run_dir = f"{series}/{phase}-{threads}"
            write_run(tmp_path / run_dir, synthetic_samples(rate, failed))
            writer.writerow([series, servers, phase, threads, arrival, "0.7" if arrival else "", run_dir, "ok"])
        writer.writerow(["servers-2", 2, "closed", 32, "", "", "servers-2/closed-32", "failed"])
    (tmp_path / "run.info").write_text("cores=2\nthreads=4 8 16 32\nopen_fractions=0.7\n")

    maxima = report.build(tmp_path)

    one, two = maxima
    assert (one.servers, one.run.threads) == (1, 8)
    assert one.run.figures.throughput == pytest.approx(19.9)
    assert (two.servers, two.run.threads) == (2, 8)
    assert two.speedup == pytest.approx(40 / 19.9)
    assert two.efficiency == pytest.approx(40 / 19.9 / 2)
    with open(tmp_path / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [(row["servers"], row["threads"], row["max_rps"], row["speedup"]) for row in summary] == [
        ("1", "8", "19.90", "1.000"),
        ("2", "8", "40.00", f"{40 / 19.9:.3f}"),
    ]
    assert summary[0]["p95_ms"] == "20" and summary[0]["error_rate"] == "0.0050"
    text = (tmp_path / "summary.md").read_text()
    assert "| 2 | 40.0 | 8 | 20 | 20 | 20 | 0.00 % | 2.01x | 1.01 |" in text
    assert "Open model" in text
    for plot in ("scaling.png", "open_model.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "steps.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)][-1] == "no data"


def test_cpu_use_is_averaged_over_the_window():
    series = {
        ("chat-4010", 11): [(100.0, 5.0), (101.0, 5.25), (102.0, 5.5), (103.0, 5.75)],  # a quarter core
        ("chat-4010", 12): [(101.5, 0.0), (102.5, 0.5)],  # a worker that started mid-way
        ("jmeter", 20): [(100.0, 0.0), (103.0, 3.0)],
    }
    cores = cpu.cores_in_window(series, 101.0, 103.0)
    assert cores["chat-4010"] == pytest.approx((0.5 + 0.5) / 2)
    assert cores["jmeter"] == pytest.approx(1.0)
