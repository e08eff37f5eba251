"""The SLO search and its arithmetic, on synthetic runs: the criteria, growth, bisection to
within 5 %, confirmation; open-model figures counted from scheduled arrivals; the report's
table of maxima and its check that the chat tier is the bottleneck; the score card's verdict.
Nothing here starts a process (tests/system/test_battle.py runs the real thing)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tools.loadtest import battle, report, samples, search
from tools.loadtest.samples import Sample, StepFigures

pytestmark = pytest.mark.fast

T0 = 1_800_000_000_000


def figures(p99: float = 50, errors: int = 0, requests: int = 1000, sent_ratio: float = 1.0) -> StepFigures:
    seconds = 10
    return StepFigures(
        T0, T0 + seconds * 1000, requests, errors, 10, 30, p99, 12, offered_rate=requests / seconds / sent_ratio
    )


# --- the criteria -------------------------------------------------------------------------


def test_a_run_meets_the_objective_only_under_every_bound():
    objective = search.Objective(p99_ms=250)
    assert objective.failed(figures()) == []
    assert objective.failed(figures(p99=250)) == []  # p99 <= SLO
    assert objective.failed(figures(p99=251)) == ["p99"]
    assert objective.failed(figures(errors=10)) == ["errors"]  # 1 % is not under 1 %
    assert objective.failed(figures(errors=9)) == []
    assert objective.failed(figures(sent_ratio=0.985)) == ["sent"]
    assert objective.failed(figures(p99=900, errors=50, sent_ratio=0.5)) == ["errors", "sent", "p99"]
    assert objective.failed(None) == ["no data"]
    assert objective.failed(figures(p99=math.nan)) == ["p99"]


# --- the search ---------------------------------------------------------------------------


class Deployment:
    """A fake target: every rate up to `capacity` meets the objective, above it p99 fails;
    a rate in `flaky` fails the second time it is measured."""

    def __init__(self, capacity: float, flaky: set[float] | None = None):
        self.capacity = capacity
        self.flaky = set(flaky or ())
        self.calls: list[tuple[float, str]] = []

    def __call__(self, rate: float, phase: str) -> search.Step:
        self.calls.append((rate, phase))
        again = rate in self.flaky and [r for r, _ in self.calls].count(rate) == 2
        failed = ["p99"] if rate > self.capacity or again else []
        return search.Step(rate, phase, figures(p99=900 if failed else 50), failed)


def test_search_grows_until_a_criterion_fails_then_bisects_to_within_five_percent():
    deployment = Deployment(capacity=100)
    result = search.search(deployment, search.Plan(start_rate=10, growth=2, confirmations=3))

    grown = [rate for rate, phase in deployment.calls if phase == "grow"]
    assert grown == [10, 20, 40, 80, 160]  # 160 is the first to fail
    assert result.failed_first == ["p99"] and result.failing_rate is not None
    assert result.maximum is not None and 80 <= result.maximum <= 100
    assert result.failing_rate <= result.maximum * 1.05 or any(
        phase == "bisect" and rate > result.maximum and rate <= result.maximum * 1.05
        for rate, phase in deployment.calls
    )
    assert len(result.confirmed) == 3 and {step.rate for step in result.confirmed} == {result.maximum}
    assert result.spread("p99_ms") == (50, 50)


def test_search_shrinks_when_the_first_rate_already_fails():
    deployment = Deployment(capacity=7)
    result = search.search(deployment, search.Plan(start_rate=40, growth=2, confirmations=1))
    assert [phase for _, phase in deployment.calls][:4] == ["grow", "shrink", "shrink", "shrink"]
    assert result.maximum is not None and result.maximum <= 7
    assert result.maximum > 7 / 1.06


def test_a_failed_confirmation_steps_the_maximum_down_and_starts_counting_again():
    deployment = Deployment(capacity=100, flaky={80.0})
    plan = search.Plan(start_rate=80, growth=1.5, precision=0.6, confirmations=2, misses=0)
    result = search.search(deployment, plan)
    # 80 passes, 120 fails (within 60 %: no bisection), the first confirmation of 80 fails.
    assert deployment.calls[:3] == [(80, "grow"), (120, "grow"), (80, "confirm")]
    assert result.maximum == pytest.approx(80 / 1.6)
    assert [step.phase for step in result.confirmed] == ["confirm", "confirm"]
    assert result.failed_first == ["p99"] and result.failing_rate == 80


class Outcomes:
    """A fake target whose runs at each rate pass or fail in the order given (True: pass);
    a rate with no outcomes left passes up to `capacity`."""

    def __init__(self, capacity: float, outcomes: dict[float, list[bool]]):
        self.capacity, self.outcomes = capacity, {rate: list(runs) for rate, runs in outcomes.items()}
        self.calls: list[tuple[float, str]] = []

    def __call__(self, rate: float, phase: str) -> search.Step:
        self.calls.append((rate, phase))
        queued = self.outcomes.get(rate, [])
        passed = queued.pop(0) if queued else rate <= self.capacity
        return search.Step(
            rate, phase, figures(p99=50 if passed else 900), [] if passed else ["p99"], dir=f"{len(self.calls):02d}"
        )


def test_one_missed_confirmation_is_allowed_and_reported_a_second_steps_the_rate_down():
    plan = search.Plan(start_rate=80, growth=1.5, precision=0.6, confirmations=3, misses=1)
    # 80 passes, 120 fails; of 80's confirmations one misses: 80 stands, "3 of 4".
    once = Outcomes(capacity=100, outcomes={80: [True, True, False, True]})
    result = search.search(once, plan)
    assert result.maximum == 80
    assert [step.dir for step in result.confirmed] == ["01", "03", "05"]
    assert [step.dir for step in result.missed] == ["04"]
    assert result.failed_first == ["p99"] and result.failing_rate == 120  # the miss is not where it fails
    record = search.result_record(result, "servers-1", 1, search.WORKLOADS["hot"], plan)
    assert record["missed_dirs"] == ["04"] and record["confirmed_dirs"] == ["01", "03", "05"]

    # A second miss at 80 steps down to 50 and counts afresh there: no miss is carried over.
    twice = Outcomes(capacity=100, outcomes={80: [True, False, False]})
    result = search.search(twice, plan)
    assert result.maximum == pytest.approx(80 / 1.6)
    assert [phase for _, phase in twice.calls] == ["grow", "grow"] + ["confirm"] * 5
    assert len(result.confirmed) == 3 and result.missed == []
    assert result.failing_rate == 80


def test_a_rate_that_passed_once_at_the_edge_is_left_in_steps_that_double():
    """At one server's capacity the p99 of a short run is a coin toss: a grow step there may
    pass once and every confirmation after it fail. Steps down of 5 %, then 10 %, 20 % ...
    reach a rate the deployment sustains before the confirmation runs are spent, and the
    search then bisects back up between that rate and the lowest that missed out."""
    plan = search.Plan(start_rate=60, growth=2, precision=0.05, confirmations=3, misses=1)
    edge = Outcomes(capacity=100, outcomes={120: [True]})  # 120 passes once, then only up to 100
    result = search.search(edge, plan)
    confirms = [rate for rate, phase in edge.calls if phase == "confirm"]
    stepped_to = 120 / 1.05 / 1.10 / 1.20  # 86.6: the third step down, confirmed in full
    assert confirms[:9] == [120] * 2 + [120 / 1.05] * 2 + [120 / 1.05 / 1.10] * 2 + [stepped_to] * 3
    assert 100 / 1.05 <= result.maximum <= 100  # bisected up to within 5 % of the capacity
    assert len(result.confirmed) == 3 and result.missed == []
    assert {step.rate for step in result.confirmed} == {result.maximum}
    assert len(confirms) <= plan.max_confirmation_runs


def test_bisecting_back_up_keeps_the_rate_confirmed_when_a_higher_one_misses_out():
    plan = search.Plan(start_rate=60, growth=2, precision=0.05, confirmations=3, misses=1)
    stepped_to = 120 / 1.05 / 1.10 / 1.20
    middle = math.sqrt(stepped_to * 120 / 1.05 / 1.10)  # 94.9: passes once, then misses twice
    edge = Outcomes(capacity=100, outcomes={120: [True], middle: [True, False, False]})
    result = search.search(edge, plan)
    assert (middle, "confirm") in edge.calls
    assert result.maximum is not None and result.maximum != middle
    assert {step.rate for step in result.confirmed} == {result.maximum}
    assert len(result.confirmed) == 3
    assert result.failing_rate is not None and result.failing_rate >= result.maximum


def test_bisecting_back_up_stops_when_the_confirmation_runs_are_spent():
    plan = search.Plan(start_rate=60, growth=2, precision=0.01, confirmations=3, misses=1)
    edge = Outcomes(capacity=100, outcomes={120: [True]})
    result = search.search(edge, plan)
    assert sum(phase == "confirm" for _, phase in edge.calls) <= plan.max_confirmation_runs
    assert result.maximum is not None and result.maximum <= 100 and len(result.confirmed) == 3


def test_no_rate_meets_the_objective():
    result = search.search(Deployment(capacity=0), search.Plan(start_rate=4, growth=2, min_rate=1))
    assert result.maximum is None and result.confirmed == []
    assert result.failed_first == ["p99"]


def test_the_step_budget_bounds_the_search():
    deployment = Deployment(capacity=1e9)
    result = search.search(deployment, search.Plan(start_rate=1, growth=2, max_steps=5, confirmations=3))
    assert [phase for _, phase in deployment.calls].count("grow") == 5
    assert result.failed_first == []  # never bracketed: the report says so
    assert len(result.confirmed) == 3


# --- open-model figures from scheduled arrivals ---------------------------------------------


def setup_rows() -> list[Sample]:
    return [Sample("register", T0, 500, True), Sample("login", T0 + 500, 400, True)]


def test_latency_counts_from_the_scheduled_arrival_not_the_late_start():
    # 10 arrivals/s from T0 + 1 s for 12 s; each request starts 300 ms after its arrival
    # (every user was busy) and takes 20 ms: its latency is 320 ms, not 20.
    origin = T0 + 1000
    rows = setup_rows() + [
        Sample("post message", origin + k * 100 + 300, 20, True, "201", origin + k * 100) for k in range(120)
    ]
    result = samples.scheduled_figures(rows, arrival_rate=10, arrival_s=12)
    assert result is not None
    assert result.window_start_ms == origin + samples.SETTLE_MS
    assert result.window_end_ms == origin + 12_000 - samples.END_GRACE_MS
    assert result.p99_ms == 320 and result.p50_ms == 320
    assert result.sent_ratio == pytest.approx(1.0)


def test_arrivals_never_claimed_count_as_offered_but_not_sent():
    # Arrivals due every 100 ms, but only the first 5 s of them were ever sent.
    origin = T0 + 1000
    rows = setup_rows() + [
        Sample("read messages", origin + k * 100, 10, True, "200", origin + k * 100, 20) for k in range(50)
    ]
    result = samples.scheduled_figures(rows, arrival_rate=10, arrival_s=12)
    assert result is not None
    window = (result.window_end_ms - result.window_start_ms) / 1000
    sent = 40  # arrivals at 1.0 .. 4.9 s after the origin
    assert result.requests == sent
    last_claimed = 4.9  # seconds after the origin; the window ends at 10.5
    assert result.offered_rate == pytest.approx((sent + 10 * (10.5 - last_claimed)) / window)
    assert result.sent_ratio < 0.5
    assert result.messages_per_read == 20
    assert search.Objective().failed(result) == ["sent"]


def test_errors_are_counted_by_kind():
    assert Sample("post message", 0, 1, False, "503").error_kind == "HTTP 503"
    assert Sample("read messages", 0, 1, False, "200").error_kind == "assertion"
    assert (
        Sample("post message", 0, 1, False, "Non HTTP response code: java.net.SocketTimeoutException").error_kind
        == "SocketTimeoutException"
    )


def test_results_csv_columns_of_the_plan_are_read(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(
        "timeStamp,elapsed,label,responseCode,success,scheduled_ms,returned,served_by\n"
        f"{T0},5,register,201,true,null,null,null\n"
        f"{T0 + 10},5,read messages,200,true,{T0 + 8},17,chat2\n"
    )
    setup, read = samples.read_samples(path)
    assert (setup.scheduled_ms, setup.returned, setup.served_by) == (None, None, "")
    assert (read.scheduled_ms, read.returned, read.served_by, read.latency_ms) == (T0 + 8, 17, "chat2", 7)


# --- the report of a scale test ------------------------------------------------------------


def write_search(tmp_path, series: str, servers: int, maximum: float, throughputs: list[float], cores: dict) -> None:
    """A finished search with its confirmed runs (results.csv at the given throughputs) and
    cpu.csv lines giving each group `cores` over the runs; each series has its own time."""
    base = T0 + servers * 100_000
    dirs = []
    runs_file = tmp_path / "runs.csv"
    new = not runs_file.exists()
    with open(runs_file, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(search.RUNS_COLUMNS)
        for index, rate in enumerate(throughputs):
            name = f"{series}/hot/{index:02d}-confirm-{maximum}"
            run_dir = tmp_path / name
            run_dir.mkdir(parents=True)
            origin = base + 2000  # arrivals for 12.5 s from here: the window is [+1 s, +11 s]
            count = int(rate * 12.5)
            with open(run_dir / "results.csv", "w", newline="") as results:
                out = csv.writer(results)
                out.writerow(["timeStamp", "elapsed", "label", "responseCode", "success", "scheduled_ms", "returned"])
                out.writerow([base, 500, "register", 201, "true", "null", "null"])
                for k in range(count):
                    at = origin + k * 12_500 // count
                    out.writerow([at, 40, "read messages", 200, "true", at, 20])
            writer.writerow([series, servers, "confirm", 16, maximum, "", name, "ok", "hot", 12.5])
            dirs.append(name)
    record = {
        "series": series,
        "servers": servers,
        "workload": "hot",
        "workload_description": "hot room",
        "objective": {"p99_ms": 250.0, "max_error_rate": 0.01, "min_sent_ratio": 0.99},
        "plan": {"growth": 1.5, "precision": 0.05, "confirmations": 3},
        "maximum_rps": maximum,
        "failed_first": ["p99"],
        "failing_rps": maximum * 1.05,
        "confirmed_dirs": dirs,
        "steps": [],
    }
    (tmp_path / series / "hot" / "search.json").write_text(json.dumps(record))
    start = (base + 2000) / 1000
    with open(tmp_path / "cpu.csv", "a", newline="") as handle:
        out = csv.writer(handle)
        if handle.tell() == 0:
            out.writerow(["time", "group", "pid", "cpu_seconds"])
        for group, value in cores.items():
            out.writerow([start, group, servers, 0.0])  # one process per group and series
            out.writerow([start + 12, group, servers, value * 12])


def test_report_gives_the_maximum_its_spread_speedup_cost_and_validity(tmp_path):
    (tmp_path / "run.info").write_text("cores=2\ncap_cores_applied=0.25\ncommand=scripts/scale_test.sh\n")
    write_search(tmp_path, "servers-1", 1, 100.0, [98.0, 100.0, 102.0], {"chat-1": 0.25, "jmeter": 0.1, "machine": 0.6})
    # Three servers: chat 0.75 of 0.75 cores, the rest 1.35 - 0.75 = 0.6 of the 1.25 left: 48 %.
    write_search(
        tmp_path, "servers-3", 3, 250.0, [250.0, 250.0, 250.0], {"chat-1": 0.75, "jmeter": 0.25, "machine": 1.35}
    )
    report.build(tmp_path)
    with open(tmp_path / "slo.csv", newline="") as handle:
        rows = {row["series"]: row for row in csv.DictReader(handle)}
    one, three = rows["servers-1"], rows["servers-3"]
    assert (one["max_rps"], one["runs_at_max"], one["throughput_min"], one["throughput_max"]) == (
        "100.00",
        "3",
        "98.00",
        "102.00",
    )
    assert three["speedup"] == "2.500"
    assert float(one["chat_ms_per_req"]) == pytest.approx(0.25 * 1000 / 100, rel=0.02)
    assert float(three["jmeter_ms_per_req"]) == pytest.approx(1.0, rel=0.02)
    assert float(one["messages_per_read"]) == 20
    assert three["valid"] == "yes" and three["failed_first"] == "p99"
    text = (tmp_path / "summary.md").read_text()
    assert "## Maximum within the objective" in text and "98.0-102.0" in text
    assert (tmp_path / "slo.png").read_bytes()[:4] == b"\x89PNG"


def test_a_series_whose_shared_parts_crowd_the_chat_tier_is_marked_invalid(tmp_path):
    (tmp_path / "run.info").write_text("cores=2\ncap_cores_applied=0.25\n")
    # 1.5 - 0.75 = 0.75 cores of the 1.25 the caps leave: 60 %, over half.
    write_search(tmp_path, "servers-3", 3, 200.0, [200.0], {"chat-1": 0.75, "ferretdb": 0.5, "machine": 1.5})
    report.build(tmp_path)
    with open(tmp_path / "slo.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["valid"] == "no" and float(row["shared_cores"]) == pytest.approx(0.75, rel=0.02)
    assert "INVALID" in (tmp_path / "summary.md").read_text()


def test_with_the_chat_servers_pinned_the_shared_parts_have_the_other_cores_alone(tmp_path):
    (tmp_path / "run.info").write_text(
        "cores=2\ncap_cores_applied=0.15\nshared_cores=1\n"
        "pin=the chat servers on CPU 1, everything else (the stack's other processes, JMeter) on CPU 0\n"
        "idle=idle cores poll (PM QoS request cpu_dma_latency 0 held for the test)\n"
    )
    # 1.05 - 0.45 = 0.6 cores: under half of the 1.55 cores the caps leave, but over half of
    # the one core the shared parts may use when the chat servers have the other.
    write_search(tmp_path, "servers-3", 3, 180.0, [180.0], {"chat-1": 0.45, "ferretdb": 0.3, "machine": 1.05})
    report.build(tmp_path, plots=False)
    with open(tmp_path / "slo.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["valid"] == "no"
    text = (tmp_path / "summary.md").read_text()
    assert "INVALID: all but the chat servers used 0.60 of the 1.00 cores beside the chat servers' own" in text
    assert "- cores: the chat servers on CPU 1, everything else" in text
    assert "- idle cores: idle cores poll" in text


def test_on_postgresql_the_database_counts_postgresql_beside_ferretdb(tmp_path):
    (tmp_path / "run.info").write_text("cores=2\ncap_cores_applied=0.25\n")
    # A busy machine whose busiest part is the database, 0.3 + 0.4 = 0.7 cores (the chat
    # server 0.15, under its cap); the shared parts use 1.9 - 0.15 = 1.75 of 1.75 cores: invalid.
    write_search(
        tmp_path, "servers-1", 1, 100.0, [100.0], {"chat-1": 0.15, "ferretdb": 0.3, "postgresql": 0.4, "machine": 1.9}
    )
    report.build(tmp_path, plots=False)
    with open(tmp_path / "slo.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["ferretdb_ms_per_req"]) == pytest.approx(3.0, rel=0.02)
    assert float(row["postgresql_ms_per_req"]) == pytest.approx(4.0, rel=0.02)
    assert row["valid"] == "no"
    text = (tmp_path / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| workload |"))
    headline = next(line for line in text.splitlines() if line.startswith("| hot |"))
    cells = dict(zip(header.split("|"), headline.split("|"), strict=True))
    assert (cells[" FerretDB ms/req "], cells[" PostgreSQL ms/req "]) == (" 3.00 ", " 4.00 ")
    assert "database 0.70 (ferretdb 0.30 + postgresql 0.40)" in cells[" limited by "]
    assert "the database 0.70" in cells[" valid "]


def test_on_sqlite_the_headline_has_no_postgresql_column(tmp_path):
    (tmp_path / "run.info").write_text("cores=2\n")
    write_search(tmp_path, "servers-1", 1, 50.0, [50.0], {"chat-1": 0.2, "ferretdb": 0.1, "machine": 0.5})
    report.build(tmp_path, plots=False)
    assert "PostgreSQL" not in (tmp_path / "summary.md").read_text()
    with open(tmp_path / "slo.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["postgresql_ms_per_req"] == "" and float(row["ferretdb_ms_per_req"]) == pytest.approx(2.0, rel=0.02)


def test_extra_per_run_figures_become_columns(tmp_path, monkeypatch):
    (tmp_path / "run.info").write_text("cores=2\n")
    write_search(tmp_path, "servers-1", 1, 50.0, [50.0, 50.0], {"chat-1": 0.2, "machine": 0.5})
    monkeypatch.setitem(report.EXTRA_FIGURES, "collisions/post", lambda run_dir: 0.25)
    report.build(tmp_path, plots=False)
    assert "| collisions/post |" in (tmp_path / "summary.md").read_text()
    assert "| 0.250 |" in (tmp_path / "summary.md").read_text()


# --- the score card --------------------------------------------------------------------------


def card(maxima: list[float | None], preflight_ok: bool = True) -> dict:
    return {
        "target": "http://127.0.0.1:1",
        "preflight": {"ok": preflight_ok},
        "exit_status": 0,
        "workloads": [
            {"workload": name, "maximum_rps": value, "at_maximum": {"p99_ms": [90, 110]}}
            for name, value in zip(("hot", "rooms"), maxima, strict=False)
        ],
    }


def test_the_verdict_of_a_score_card_follows_the_thresholds():
    assert battle.verdict(card([120.0, 300.0]), None) == (battle.PASSED, [])
    assert battle.verdict(card([120.0, 300.0]), 100) == (battle.PASSED, [])
    status, reasons = battle.verdict(card([120.0, 300.0]), 150)
    assert status == battle.THRESHOLD_FAILED and reasons == ["hot: 120.0 req/s < --min-rps 150"]
    assert battle.verdict(card([None, 300.0]), None)[0] == battle.THRESHOLD_FAILED
    assert battle.verdict(card([120.0], preflight_ok=False), None)[0] == battle.PREFLIGHT_FAILED


def test_a_target_that_answered_429_during_the_search_is_named_as_the_limit():
    generator = {"cores": 2, "machine_busy_cores": 0.5, "jmeter_cores": 0.1}
    assert "battle profile (docs/conformance.md)" in battle.limited_by(generator, ["errors"], rate_limited=True)
    assert battle.limited_by(generator, ["p99"]).startswith("the target (p99 failed first")
    busy = {**generator, "machine_busy_cores": 1.9}
    assert battle.limited_by(busy, ["p99"]).startswith("the load generator's machine")


def test_the_leaderboard_ranks_deployments_by_their_maxima():
    slow, fast = card([50.0, 80.0]), card([120.0, 300.0])
    slow["name"], fast["name"] = "team-a", "team-b"
    lines = battle.leaderboard([slow, fast])
    assert lines[2].startswith("| 1 | team-b | 120.0 (90-110) | 300.0 (90-110)")
    assert lines[3].startswith("| 2 | team-a |")
