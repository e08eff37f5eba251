"""docs/results/index.json lists every kept report, and the docs lead with the current one:
the machine-readable index and the folders cannot drift apart unnoticed."""

from __future__ import annotations

import json

import pytest

from tests.lib.harness import ROOT

RESULTS = ROOT / "docs" / "results"
pytestmark = pytest.mark.fast


def index() -> dict:
    return json.loads((RESULTS / "index.json").read_text())


def test_every_kept_report_is_in_the_index_and_every_entry_exists():
    listed = [report["path"] for report in index()["reports"]]
    assert len(listed) == len(set(listed))
    on_disk = {path.name for path in RESULTS.iterdir() if path.name not in ("index.json", "archive")}
    on_disk |= {f"archive/{path.name}" for path in (RESULTS / "archive").iterdir() if path.name != "README.md"}
    assert set(listed) == on_disk
    for report in index()["reports"]:
        assert report["status"] in ("current", "kept", "archived")
        assert report["path"].startswith("archive/") == (report["status"] == "archived")


def test_the_current_report_of_each_kind_is_kept_and_shown_first_in_the_docs():
    reports = {report["path"]: report for report in index()["reports"]}
    for kind, path in index()["current"].items():
        if path is None:
            continue
        assert reports[path]["kind"] == kind and reports[path]["status"] == "current"
        for doc in ("README.md", "docs/load-testing.md"):
            assert f"docs/results/{path}" in (ROOT / doc).read_text(), f"{doc} does not show {path}"
