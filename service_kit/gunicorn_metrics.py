"""The gunicorn side of the metrics (conf/gunicorn.conf.py calls these in the master): the
folder the workers write their values to, the listener that serves their sum on the
loopback METRICS_PORT, the CPU and memory of the master and its workers, and the clean-up
when a worker exits.

Imports neither Flask nor pymongo, and prometheus-client only once PROMETHEUS_MULTIPROC_DIR
is set: the library chooses where values live when it is first imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def prepare_directory(port: int) -> str:
    """In the master, once, before it forks its first worker (gunicorn's on_starting, after
    --daemon's fork: the folder is named after the master's pid): a fresh, empty folder for
    its workers' values, named in PROMETHEUS_MULTIPROC_DIR for the workers. Values of an
    earlier run must not be added to this one's, so a folder given there is emptied first."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        shutil.rmtree(given, ignore_errors=True)
        os.makedirs(given, mode=0o700)
        return given
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()  # tmpfs: no disk writes
    _remove_orphans(base, port)
    folder = tempfile.mkdtemp(prefix=f"chatsys-metrics-{os.getpid()}-{port}-", dir=base)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _remove_orphans(base: str, port: int) -> None:
    """Folders of earlier masters of this port that were killed (on_exit never ran for
    them): named after this port and a pid that is gone. Only this port's: another
    service's master may be alive but invisible here (systemd's ProtectProc=invisible hides
    other units' processes), and removing its folder would fail its workers' boot."""
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("chatsys-metrics-") and len(parts) >= 5 and parts[2].isdigit() and parts[3] == str(port):
            if not os.path.exists(f"/proc/{parts[2]}"):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def remove_directory() -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, state, is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


class ServiceProcesses:
    """CPU and resident memory of the master and its workers, together: the master's own
    CPU and that of the workers it has reaped (cutime, cstime), plus the workers alive, so
    the total only grows across worker restarts."""

    def __init__(self, arbiter) -> None:
        self._arbiter = arbiter

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        master = _stat(os.getpid()) or ["0"] * 22
        ticks = sum(int(value) for value in master[11:15])
        pages = int(master[21])
        workers = list(self._arbiter.WORKERS)
        for pid in workers:
            fields = _stat(pid)
            if fields is not None:
                ticks += int(fields[11]) + int(fields[12])
                pages += int(fields[21])
        yield CounterMetricFamily(
            "chatsys_process_cpu_seconds",
            "CPU (user + system) of the gunicorn master and its workers.",
            ticks / _CLOCK_TICKS,
        )
        yield GaugeMetricFamily(
            "chatsys_process_resident_memory_bytes",
            "Resident memory of the gunicorn master and its workers.",
            pages * _PAGE_BYTES,
        )
        yield GaugeMetricFamily("chatsys_workers", "Gunicorn workers alive.", len(workers))


class WithServer:
    """Another collector's samples, each with the label `server` added: the name of this
    service instance where the scraper has none to give (compose: Prometheus finds the
    containers by address, and cannot name them)."""

    def __init__(self, collector, server: str) -> None:
        self._collector = collector
        self._server = server

    def collect(self):
        for family in self._collector.collect():
            family.samples = [
                sample._replace(labels={**sample.labels, "server": self._server}) for sample in family.samples
            ]
            yield family


def serve(arbiter, host: str, port: int, server: str = "") -> None:
    """Serve the workers' summed values and the processes' CPU and memory on host:port,
    from a thread of the master (it answers even while every worker is busy), each sample
    labelled `server` when a name is given. A port that is taken leaves the service
    running without its metrics, and says so."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    for collector in (multiprocess.MultiProcessCollector(None), ServiceProcesses(arbiter)):
        registry.register(WithServer(collector, server) if server else collector)
    try:
        start_http_server(port, addr=host, registry=registry)
    except (OSError, OverflowError) as error:  # taken, or beyond 65535 (PORT + METRICS_PORT_OFFSET)
        arbiter.log.error("metrics not served: cannot listen on %s:%s: %s", host, port, error)


def worker_exited(pid: int) -> None:
    """Drop the gauges of a worker that is gone (its counters and histograms stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
