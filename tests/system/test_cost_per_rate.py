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
    # The control: back to back, each rate as it is and with the cores kept awake, back to
    # back again; every arrival done.
    assert [(row["rate"], row.get("awake", False)) for row in outcome["control"]] == [
        (None, False),
        (5, False),
        (5, True),
        (10, False),
        (10, True),
        (None, False),
    ]
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
    assert not list(tmp_path.glob("chat-*")), "no profiles unless asked"


def test_the_profile_of_each_rate_is_a_flame_graph_a_pprof_and_a_layer_table(tmp_path):
    argv = ["--rates", "20", "--seconds", "3", "--idle-seconds", "1", "--profile", "--out", str(tmp_path)]
    assert cost_per_rate.main(argv) == 0
    outcome = json.loads((tmp_path / "cost_per_rate.json").read_text())
    assert outcome["command"].endswith("--profile")
    [row] = outcome["rows"]
    # Every request was answered while sampled, and the worker's samples fell into layers
    # that add up to the whole, the service's own code among them.
    assert row["ok"] == row["requests"] == 60, row
    assert abs(sum(row["layers"].values()) - 1) < 0.01 and row["layers"].get(cost_per_rate.LAYERS[1][0], 0) > 0
    svg = (tmp_path / "chat-20.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "chat_service" in svg
    assert str(tmp_path) not in svg, "the flame graph's title names no folder of this machine"
    stacks = (tmp_path / "chat-20.txt").read_text()
    assert "post_message" in stacks and "read_newest" in stacks  # the run's posts and reads
    assert (tmp_path / "ferretdb-20.pprof").stat().st_size > 0
    assert "flat%" in (tmp_path / "ferretdb-20-top.txt").read_text()
    # The layer table: one row per layer and one for the rest, each "ms (share)", then the whole.
    report = (tmp_path / "cost_per_rate.md").read_text()
    layer_rows = [line for line in report.splitlines() if line.startswith("| ") and " ms (" in line]
    assert len(layer_rows) == len(cost_per_rate.LAYERS) + 1
    assert f"| all (CPU ms/req) | {row['cpu_ms_per_request']:.2f} ms |" in report


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
