"""`python -m tools.loadtest keep`: a results directory made small enough to commit keeps what
answers for the test and the dashboard of the headline run, and says what it left out."""

from __future__ import annotations

import json

import pytest

from tools.loadtest import keep

pytestmark = pytest.mark.fast


def make_results(root):
    for name in ("summary.md", "slo.csv", "slo.png", "runs.csv", "run.info", "timeline.csv", ".maximum"):
        (root / name).write_text(name)
    for series in ("servers-1", "servers-3"):
        for workload in ("hot", "rooms"):
            search = root / series / workload
            search.mkdir(parents=True)
            runs = ("01-grow-40.0", "02-confirm-80.0", "03-confirm-80.0", "04-confirm-88.0")
            # The search confirmed 80 req/s; the run at 88 req/s, after them, failed.
            confirmed = [f"{series}/{workload}/{run}" for run in runs[1:3]]
            (search / "search.json").write_text(json.dumps({"confirmed_dirs": confirmed}))
            for run in runs:
                (search / run / "dashboard").mkdir(parents=True)
                (search / run / "results.csv").write_text("big")
                (search / run / "store.json").write_text("{}")
                (search / run / "dashboard" / "index.html").write_text("<html>")


def test_keep_copies_the_report_the_searches_and_the_headline_run_whole(tmp_path):
    results, dest = tmp_path / "results", tmp_path / "kept"
    results.mkdir()
    make_results(results)
    headline = keep.headline_run(results)
    assert headline == "servers-3/hot/03-confirm-80.0"
    keep.keep(results, dest, [headline])
    assert (dest / "slo.png").exists() and (dest / "timeline.csv").exists() and not (dest / ".maximum").exists()
    assert (dest / "servers-1/rooms/search.json").exists() and (
        dest / "servers-1/rooms/01-grow-40.0/store.json"
    ).exists()
    assert not (dest / "servers-1/rooms/01-grow-40.0/results.csv").exists()
    assert (dest / headline / "dashboard/index.html").exists() and (dest / headline / "results.csv").exists()
    assert not (dest / "servers-3/hot/02-confirm-80.0/dashboard").exists()
    summary = (dest / "summary.md").read_text()
    assert "## This copy" in summary and f"`{headline}/dashboard/index.html`" in summary


def test_no_headline_run_when_the_search_confirmed_nothing(tmp_path):
    search = tmp_path / "servers-1" / "hot"
    (search / "01-confirm-40.0").mkdir(parents=True)
    (search / "search.json").write_text(json.dumps({"confirmed_dirs": []}))
    assert keep.headline_run(tmp_path) is None
