"""The sampling profilers the measuring tools share: py-spy on a Python process (a flame graph,
or the collapsed stacks to count) and FerretDB's own pprof (a CPU profile and its top list).

Each starter returns the running sampler; the caller runs its load meanwhile, then waits for it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"


def py_spy(pid: int, seconds: float, output: Path, fmt: str = "flamegraph", rate: int = 250, blocking: bool = False):
    """py-spy recording `pid` for `seconds` into `output` (`fmt`: flamegraph, an SVG; raw, the
    collapsed stacks). Non-blocking by default: the process is not paused for a sample, so
    its CPU is what it would be unsampled, at the price of an occasional torn stack. Its
    messages (a few lines) are in its stdout pipe (`wait_sampling`)."""
    # The flame graph's title is py-spy's command line: named "py-spy", run in the output's
    # folder, it names no folder of the machine that made it.
    argv = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate), "--format", fmt, "--output", output.name]
    if not blocking:
        argv.append("--nonblocking")
    return subprocess.Popen(
        argv, executable=PY_SPY, cwd=output.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_sampling(spy: subprocess.Popen) -> None:
    """Returns once py-spy says it samples (its first message, after it has attached)."""
    said = []
    for line in spy.stdout or ():
        said.append(line.strip())
        if "Sampling process" in line:
            return
    spy.wait()
    raise RuntimeError(f"py-spy ended before it sampled (exit code {spy.returncode}): {' / '.join(said)}")


def ferretdb_cpu_profile(debug_port: int, seconds: float, output: Path):
    """FerretDB's Go CPU profile (its debug handler's /debug/pprof/profile) over `seconds`."""
    url = f"http://127.0.0.1:{debug_port}/debug/pprof/profile?seconds={max(1, round(seconds))}"
    return subprocess.Popen(["curl", "-sf", "-o", str(output), url])


def pprof_top(profile: Path, cumulative: bool = False, nodes: int = 40) -> str:
    """`go tool pprof -top` of a profile: its functions by own (or, `cumulative`, total) time."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    argv = [go, "tool", "pprof", "-top", f"-nodecount={nodes}", *(["-cum"] if cumulative else []), str(profile)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def collapsed_stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw output: each stack's frames (outermost first) and its samples."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(count)
