"""scripts/battle.sh in its short mode against the test stack: the score card it writes and
its exit status on both sides of a threshold, and the pre-flight naming a rate limit that
would cap the result. The objective is set loose (from 5 req/s, p99 within 5 s, errors under
half, half of the offered sent: a single 503 among the few dozen requests of a short run on
a busy machine must not decide it) so that a maximum is found however busy the machine:
what is tested is the gate, not the stack's speed."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.lib import harness
from tests.lib.harness import ROOT

LOOSE = [
    "--quick",
    "--workloads",
    "hot",
    "--start-rate",
    "5",
    "--slo-p99",
    "5000",
    "--max-errors",
    "50",
    "--min-sent",
    "50",
]


def battle(stack, out, *args: str, chat_url: str | None = None) -> subprocess.CompletedProcess:
    harness.require_tool("java")  # scripts/setup.sh installs a JDK and Maven when missing
    return subprocess.run(
        [
            str(ROOT / "scripts" / "battle.sh"),
            "--target",
            chat_url or stack.chat_url,
            "--login",
            stack.login_url,
            "--profile",
            stack.profile_url,
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,  # the first call may assemble JMeter
    )


@pytest.mark.chat
def test_battle_writes_a_score_card_and_gates_on_min_rps(stack, tmp_path):
    passed = battle(stack, tmp_path / "pass", *LOOSE, "--min-rps", "1")
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    card = json.loads((tmp_path / "pass" / "score.json").read_text())
    assert card["preflight"]["ok"] and card["preflight"]["limits"] == []
    assert {check["name"] for check in card["preflight"]["checks"]} >= {"POST /login", "GET /rooms/<room>/messages"}
    (hot,) = card["workloads"]
    assert hot["workload"] == "hot" and hot["maximum_rps"] >= 1
    at = hot["at_maximum"]
    assert at["runs"] >= 1 and len(at["p50_ms"]) == len(at["p95_ms"]) == len(at["p99_ms"]) == 2
    assert at["p99_ms"][1] <= 5000
    assert all(count > 0 for count in at["errors_by_kind"].values())  # kinds that happened, if any
    assert at["served_by"] and set(at["served_by"]) <= {"chat1", "chat2", "chat3"}
    assert at["messages_per_read"] is not None and at["messages_per_read"] <= 20
    assert hot["load_generator"]["jmeter_ms_per_request"] is not None
    assert card["versions"]["jmeter"].startswith("5.6.3")
    assert card["exit_status"] == 0
    markdown = (tmp_path / "pass" / "score.md").read_text()
    assert "**PASS**" in markdown and "| hot |" in markdown
    assert (tmp_path / "pass" / "score.png").read_bytes()[:4] == b"\x89PNG"

    failed = battle(stack, tmp_path / "fail", *LOOSE, "--min-rps", "1000000")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    card = json.loads((tmp_path / "fail" / "score.json").read_text())
    assert card["exit_status"] == 1 and "--min-rps 1e+06" in card["reasons"][0]
    assert "**FAIL**" in (tmp_path / "fail" / "score.md").read_text()

    compared = subprocess.run(
        [
            str(ROOT / "scripts" / "battle.sh"),
            "compare",
            str(tmp_path / "pass" / "score.json"),
            str(tmp_path / "fail" / "score.json"),
            "--out",
            str(tmp_path / "compare"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "| 1 |" in compared.stdout and "| 2 |" in compared.stdout
    assert (tmp_path / "compare" / "compare.png").is_file()


@pytest.mark.chat
def test_preflight_names_a_rate_limit_that_would_cap_the_result(stack, processes, tmp_path):
    # The same servers behind an HAProxy whose per-token post limit is on (20 per 10 s).
    limited = harness.start_haproxy(
        processes,
        [chat.port for chat in stack.chat_servers],
        extra_env={"HAPROXY_POST_RATE": "20"},
        login=stack.login,
        profile=stack.profile,
    )
    try:
        harness.wait_until(
            lambda: "UP" in limited.server_states().values(), 15, "the limited HAProxy to see a chat server up"
        )
        done = battle(stack, tmp_path, "--quick", chat_url=limited.url)
    finally:
        limited.process.stop()
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    card = json.loads((tmp_path / "score.json").read_text())
    assert not card["preflight"]["ok"] and card["workloads"] == []
    (limit,) = card["preflight"]["limits"]
    assert limit["what"] == "posts per token" and limit["retry_after"] == "10"
    assert 10 <= limit["answered_after"] <= 30  # 20 allowed, give or take the burst's 8 in flight
    assert "the battle profile (docs/conformance.md)" in (tmp_path / "score.md").read_text()
