"""`python -m tools.loadtest repeats`: runs of the scale test side by side say whether their
speed-ups agree, and never call runs of different settings or machines a repeat."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tools.loadtest import repeats
from tools.loadtest.__main__ import main

pytestmark = pytest.mark.fast

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
KEPT = RESULTS / "2026-12-07-slo-cpu-cap-0.15-pinned-poll"  # hot and rooms: 2.53x / 2.99x hot
HOT_RUN2 = RESULTS / "2026-12-08-slo-cpu-cap-0.15-pinned-poll-hot-run2"  # hot only: 1.13x / 1.75x


def copy_with(tmp_path: Path, name: str, speedups: dict[tuple[str, int], float], info: dict[str, str] | None = None):
    """A copy of the kept report's slo.csv and run.info, with the speed-ups (and settings) given."""
    dest = tmp_path / name
    dest.mkdir()
    with open(KEPT / "slo.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        series = (row["workload"], int(row["servers"]))
        if series in speedups:
            row["speedup"] = f"{speedups[series]:.3f}"
    with open(dest / "slo.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = (KEPT / "run.info").read_text()
    for key, value in (info or {}).items():
        text = "\n".join(f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.splitlines())
    (dest / "run.info").write_text(text + "\n")
    return dest


def test_two_kept_runs_of_one_setting_are_shown_apart_and_not_reproduced(capsys):
    assert main(["repeats", str(KEPT), str(HOT_RUN2)]) == 0
    out = capsys.readouterr().out
    assert "The same settings and machine in every run: AMD EPYC" in out
    assert "- 2 servers: speed-ups 2.53x, 1.13x, 1.40 apart: not reproduced" in out
    assert "- 3 servers: speed-ups 2.99x, 1.75x, 1.24 apart: not reproduced" in out
    # The second run measured the hot room only: its rooms are not compared with nothing.
    assert f"- not measured in {HOT_RUN2.name}; the rest compared" in out
    assert "chat CPU per request with 3 servers is 0.99x that of one" in out


def test_speed_ups_within_the_tolerance_are_reproduced_and_beyond_it_are_not(tmp_path):
    near = {("hot", 2): 2.50, ("hot", 3): 2.95, ("rooms", 2): 2.55, ("rooms", 3): 2.60}
    far = {**near, ("rooms", 3): 2.75}
    reports = [repeats.read_report(copy_with(tmp_path, name, s)) for name, s in (("a", near), ("b", far))]
    reports.append(repeats.read_report(KEPT))
    text = repeats.render(reports, 0.1)
    hot = text.split("## hot")[1].split("## rooms")[0]
    rooms = text.split("## rooms")[1]
    assert "- 2 servers: speed-ups 2.50x, 2.50x, 2.53x, 0.03 apart: reproduced\n" in hot
    assert "- 3 servers: speed-ups 2.95x, 2.95x, 2.99x, 0.04 apart: reproduced\n" in hot
    assert "- 2 servers: speed-ups 2.55x, 2.55x, 2.60x, 0.05 apart: reproduced\n" in rooms
    assert "- 3 servers: speed-ups 2.60x, 2.75x, 2.58x, 0.17 apart: not reproduced (more than 0.1 apart)" in rooms
    # A wider tolerance, given on the command line, lets the same runs agree.
    assert "0.17 apart: reproduced" in repeats.render(reports, 0.2)


def test_runs_on_another_cpu_or_cap_period_are_never_a_repeat(tmp_path):
    same = {("hot", 2): 2.53, ("hot", 3): 2.99}
    other = copy_with(tmp_path, "intel", same, {"cpu_model": "Intel(R) Xeon(R) Processor", "cap_period_us": "25000"})
    text = repeats.render([repeats.read_report(KEPT), repeats.read_report(other)], 0.1)
    assert "Not one measurement repeated: the runs differ in" in text
    assert f"- CPU model: AMD EPYC ({KEPT.name}); Intel(R) Xeon(R) Processor (intel)" in text
    assert "- cap period (µs): 100000" in text
    assert "0.00 apart: not reproduced (within the tolerance, but the runs differ in their settings or machine" in text


def test_a_directory_without_a_report_is_refused_with_its_name(tmp_path):
    shutil.copy(KEPT / "run.info", tmp_path / "run.info")
    with pytest.raises(SystemExit, match="no slo.csv"):
        repeats.read_report(tmp_path)
