"""tools.loadtest.cost_per_rate: a chat server of its own, capped as the scale test caps one,
sent fixed rates; every request answered, and each rate's CPU and sleeps per request in the
report. The figures themselves are measurements, not asserted."""

from __future__ import annotations

import json
import os
import subprocess

import psutil
import pytest

from tests.lib import harness
from tools.loadtest import cost_per_rate

pytestmark = pytest.mark.local


def test_a_short_run_at_two_rates_reports_each(tmp_path, capsys):
    usable = subprocess.run([str(harness.ROOT / "scripts" / "cpu_cap.sh"), "check"], capture_output=True, text=True)
    cap = ["--cap", "0.15"] if usable.returncode == 0 else []
    argv = ["--rates", "5 10", "--seconds", "2", "--idle-seconds", "1", *cap, "--out", str(tmp_path)]
    assert cost_per_rate.main(argv) == 0
    outcome = json.loads((tmp_path / "cost_per_rate.json").read_text())
    assert [row["rate"] for row in outcome["rows"]] == [5, 10]
    for row in outcome["rows"]:
        assert row["ok"] == row["requests"] == round(2 * row["rate"]), row
        assert row["cpu_ms_per_request"] > 0 and row["sleeps_per_request"] > 0 and row["p99_ms"] >= row["p50_ms"]
    # The control: back to back, each rate, back to back again; every arrival done.
    assert [row["rate"] for row in outcome["control"]] == [None, 5, 10, None]
    for row in outcome["control"]:
        assert row["cpu_ms_per_arrival"] > 0, row
        if row["rate"] is not None:
            assert row["arrivals"] == round(2 * row["rate"]), row
    report = (tmp_path / "cost_per_rate.md").read_text()
    assert outcome["command"] in report
    # The control beside busy neighbours, on a machine of more than one core.
    neighbours = [row["neighbours"] for row in outcome["neighbours"]]
    assert neighbours == (["idle", "spin", "json", "idle"] if len(os.sched_getaffinity(0)) > 1 else [])
    # Three tables: a header and two rates; a header, two rates and the floor twice; a
    # header and the four neighbour rows.
    tables = 3 + 5 + (5 if neighbours else 0)
    assert sum(line.startswith("| ") for line in report.splitlines()) == tables
    assert "written to" in capsys.readouterr().out


def test_the_control_keeps_its_schedule_and_counts_its_own_thread_only():
    paced = cost_per_rate.control_run(100, 0.3)
    assert paced["rate"] == 100 and paced["arrivals"] == 30 and paced["cpu_ms_per_arrival"] > 0
    back_to_back = cost_per_rate.control_run(None, 0.3)
    assert back_to_back["rate"] is None and back_to_back["arrivals"] >= 1 and back_to_back["cpu_ms_per_arrival"] > 0


def test_the_neighbours_run_on_the_other_cores_and_are_gone_after():
    if len(os.sched_getaffinity(0)) < 2:
        assert cost_per_rate.neighbours_run("spin", 0.2) is None
        return
    affinity = os.sched_getaffinity(0)
    children = {child.pid for child in psutil.Process().children()}
    row = cost_per_rate.neighbours_run("json", 0.3)
    assert row is not None and row["neighbours"] == "json" and row["cpu_ms_per_arrival"] > 0
    assert os.sched_getaffinity(0) == affinity
    assert {child.pid for child in psutil.Process().children()} <= children


def test_it_refuses_rates_that_are_not_positive_numbers(capsys):
    with pytest.raises(SystemExit) as refused:
        cost_per_rate.main(["--rates", "10 fast"])
    assert refused.value.code == 2 and "--rates takes numbers" in capsys.readouterr().err
