"""A results directory, made small enough to commit (docs/results/).

A full scale test writes about 3.5 MB per JMeter run, most of it the run's HTML dashboard,
and a search makes dozens of runs. What answers for the test is much smaller: the report
files at the top (summary, tables, plots, raw CPU samples, the list of runs, the settings,
the timeline), each search's record (search.json), and each run's store figures. `keep`
copies those, plus the whole folder (dashboard included) of the runs named, and says in
the copy's summary what was left out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOP_LEVEL = {".md", ".csv", ".png", ".json", ".info"}
PER_SEARCH = ("search.json",)
PER_RUN = ("store.json",)


def headline_run(results_dir: Path) -> str | None:
    """The last run that confirmed the maximum of the most servers' search of the first
    workload: the run whose dashboard shows the headline maximum. Its search's record names
    the confirming runs: a later "-confirm-" folder may be a run above the maximum that
    failed (the search's bisect back up)."""
    searches = sorted(results_dir.glob("*/*/search.json"))
    if not searches:
        return None
    most = max(searches, key=lambda path: (_servers(path.parent.parent.name), path.parent.name == "hot"))
    try:
        confirmed = json.loads(most.read_text()).get("confirmed_dirs") or []
    except (OSError, ValueError, AttributeError):
        confirmed = []
    present = [run for run in confirmed if (results_dir / run).is_dir()]
    return present[-1] if present else None


def _servers(series: str) -> int:
    digits = "".join(ch for ch in series if ch.isdigit())
    return int(digits) if digits else 0


def keep(results_dir: Path, dest: Path, runs: list[str]) -> list[str]:
    """Copy the report of results_dir into dest with the whole folders of `runs`
    (relative paths); returns the runs kept whole."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in results_dir.iterdir():
        if path.is_file() and path.suffix in TOP_LEVEL and not path.name.startswith("."):
            shutil.copy2(path, dest / path.name)
    kept = [results_dir.glob(f"*/*/{name}") for name in PER_SEARCH]
    kept += [results_dir.glob(f"*/*/*/{name}") for name in PER_RUN]
    for path in (path for paths in kept for path in paths):
        target = dest / path.relative_to(results_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for run in runs:
        shutil.copytree(results_dir / run, dest / run, dirs_exist_ok=True)
    summary = dest / "summary.md"
    if not summary.exists():
        summary = dest / "score.md"
    if summary.exists():
        whole = ", ".join(f"`{run}/` (its dashboard: `{run}/dashboard/index.html`)" for run in runs) or "none"
        summary.write_text(
            summary.read_text().rstrip("\n")
            + "\n\n## This copy\n\n"
            + "Kept to be committed (`python -m tools.loadtest keep`): the report files above, every "
            + "`search.json` and every run's `store.json`. Runs kept whole, with their JMeter "
            + f"dashboard: {whole}. The other runs' `results.csv`, logs and dashboards were left out "
            + "(about 3.5 MB a run).\n"
        )
    return runs
