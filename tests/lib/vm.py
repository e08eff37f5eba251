"""A Debian 12 virtual machine under QEMU for the boot test: the cached image of
scripts/vm-image.sh behind a copy-on-write overlay made for each run, a read-only disk that
carries the checkout in, and SSH plus the service ports forwarded to free 127.0.0.1 ports.

QEMU's user-mode network with restrict=on: the machine reaches nothing outside it, and the
host reaches it only through the forwarded ports. A QMP socket gives the test the machine's
reset button.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lib import harness

# The boot test's figures, printed at the end of the pytest run (tests/conftest.py).
REPORT = pytest.StashKey[list]()

# What the host forwards, by name: the guest port behind it.
# The public ports only: the services behind HAProxy listen on the guest's loopback.
GUEST_PORTS = {"ssh": 22, "login": 4100, "profile": 4200, "haproxy": 5000}
KERNEL_START = "Linux version"  # the kernel's first console line: once per boot


@dataclass
class Image:
    image: Path
    kernel: Path
    initrd: Path
    ssh_key: Path
    wheels: Path
    built: bool = False  # by this run, not taken from the cache


def cached_image() -> Image:
    """The machine image, built by scripts/vm-image.sh when it is not cached yet."""
    result = subprocess.run([str(harness.ROOT / "scripts/vm-image.sh")], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"scripts/vm-image.sh failed:\n{result.stderr}"
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Image(
        image=Path(paths["image"]),
        kernel=Path(paths["kernel"]),
        initrd=Path(paths["initrd"]),
        ssh_key=Path(paths["ssh_key"]),
        wheels=Path(paths["wheels"]),
        built="building the Debian 12 VM image" in result.stderr,
    )


def qemu_binary() -> str:
    return harness.require_tool("qemu-system-x86_64")


def choose_accelerator(image: Image, scratch: Path) -> tuple[str, str]:
    """("kvm" or "tcg", why). KVM when the kernel gets as far as its first console line under
    it; nested KVM may exist and still fail on the first instructions. CHATSYS_VM_ACCEL=kvm or
    tcg forces one."""
    forced = os.environ.get("CHATSYS_VM_ACCEL", "").lower()
    if forced in ("kvm", "tcg"):
        return forced, "forced by CHATSYS_VM_ACCEL"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    console = scratch / "kvm-probe.log"
    probe = subprocess.Popen(
        [
            qemu_binary(),
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-serial",
            f"file:{console}",
            "-kernel",
            str(image.kernel),
            "-append",
            "console=ttyS0 panic=-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and probe.poll() is None:
            if console.exists() and KERNEL_START in console.read_text(errors="replace"):
                return "kvm", "the kernel starts under KVM"
            time.sleep(0.2)
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
        output = probe.communicate(timeout=10)[0].decode(errors="replace").strip()
    first_error = next((line for line in output.splitlines() if "error" in line.lower()), output[:200])
    return "tcg", f"KVM failed: {first_error or 'the kernel printed nothing in 15 s'}"


@dataclass
class Machine:
    """One QEMU process; `close` stops it and removes its overlay, whatever happened."""

    image: Image
    accel: str
    payload: Path
    scratch: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    powered_on: float = 0.0

    @property
    def console_log(self) -> Path:
        return self.scratch / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return self.scratch / "qmp.sock"

    def start(self) -> Machine:
        overlay = self.scratch / "overlay.qcow2"
        subprocess.run(
            [
                harness.require_tool("qemu-img"),
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(self.image.image),
                str(overlay),
            ],
            check=True,
            timeout=60,
        )
        self.ports = {name: harness.free_port() for name in GUEST_PORTS}
        forwards = ",".join(f"hostfwd=tcp:127.0.0.1:{self.ports[name]}-:{guest}" for name, guest in GUEST_PORTS.items())
        cpu = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
        argv = [
            qemu_binary(),
            "-name",
            "chatsys-vm",
            *cpu,
            "-smp",
            "2",
            "-m",
            "2048",
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            "root=/dev/vda rw console=ttyS0",
            # QEMU's default cache mode, said outright: the guest sees a volatile write cache
            # and QEMU turns its flushes into fdatasync on the host. A reset (press_reset)
            # loses none of what the guest wrote to the disk whatever the mode, since QEMU
            # keeps running; cache=unsafe (flushes ignored) would lose it only with QEMU or the host.
            "-drive",
            f"file={overlay},if=virtio,format=qcow2,cache=writeback",
            "-drive",
            f"file={self.payload},if=virtio,format=raw,readonly=on",
            "-netdev",
            f"user,id=net0,restrict=on,{forwards}",
            "-device",
            "virtio-net-pci,netdev=net0",
            "-display",
            "none",
            "-monitor",
            "none",
            "-qmp",
            f"unix:{self.qmp_socket},server=on,wait=off",
            "-serial",
            f"file:{self.console_log}",
        ]
        log = open(self.scratch / "qemu.log", "ab")
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.powered_on = time.monotonic()
        return self

    def close(self) -> None:
        if self.ports:
            self._end_shared_connection()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def press_reset(self) -> None:
        """The machine's reset button (QMP's system_reset): it starts again at once, with no
        shutdown. What the guest held only in its memory (its page cache, writes not yet sent
        to the disk) is gone; what it had written to its disk stays."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
            monitor.settimeout(30)
            monitor.connect(str(self.qmp_socket))
            with monitor.makefile("rw", encoding="utf-8", newline="\n") as channel:
                channel.readline()  # the greeting
                for command in ("qmp_capabilities", "system_reset"):
                    channel.write(json.dumps({"execute": command}) + "\n")
                    channel.flush()
                    # Events (RESET among them) may come before the command's answer.
                    while "event" in (reply := json.loads(channel.readline() or '{"error": "QMP closed"}')):
                        pass
                    assert "return" in reply, f"QMP {command}: {reply}"
        # The shared SSH connection died with the old boot's sshd; a new one comes with wait_for_ssh.
        self._end_shared_connection()

    # --- what the machine shows -------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kernel_starts(self) -> int:
        """How many times the kernel has started: 1 on the first boot, 2 after one reboot."""
        try:
            return self.console_log.read_text(errors="replace").count(KERNEL_START)
        except OSError:
            return 0

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"QEMU exited ({self.process.returncode if self.process else 'never started'}):\n"
            f"{(self.scratch / 'qemu.log').read_text(errors='replace')}\n{self.console_tail()}"
        )

    # --- commands inside, over SSH ---------------------------------------------------------

    def _ssh_argv(self, *extra: str) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.image.ssh_key),
            "-p",
            str(self.ports.get("ssh", 0)),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            f"ControlPath={self.scratch}/ssh-%C",
            *extra,
            "root@127.0.0.1",
        ]

    def _end_shared_connection(self) -> None:
        try:
            subprocess.run(self._ssh_argv("-O", "exit"), capture_output=True, stdin=subprocess.DEVNULL, timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def connect(self) -> bool:
        """One SSH connection per boot that later commands share: a handshake is slow under
        TCG. It ends with the boot (or at `close`)."""
        try:
            return (
                subprocess.run(
                    self._ssh_argv("-M", "-N", "-f"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell command as root inside; never raises on its exit status."""
        try:
            return subprocess.run(
                [*self._ssh_argv("-o", "ControlMaster=no"), command],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(error.cmd, 124, "", f"timed out after {timeout} s: {command}")

    def run(self, command: str, timeout: float = 120) -> str:
        """Run a shell command as root inside; its standard output, or a failure naming it."""
        result = self.ssh(command, timeout)
        assert result.returncode == 0, (
            f"in the VM, `{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def wait_for_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.connect():
            self.assert_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SSH login into the VM within {timeout} s; its console:\n{self.console_tail()}")
            time.sleep(1)


def release_files(root: Path) -> list[str]:
    """The checkout's files the installer would take: tracked, or new and not ignored."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [name for name in listing.split("\0") if name and (root / name).is_file() and not (root / name).is_symlink()]


def make_payload(scratch: Path, wheels: Path, ferretdb: Path) -> Path:
    """A small ext4 disk that carries the checkout, the wheelhouse and FerretDB into the
    machine (mkfs.ext4 -d: no mount on the host)."""
    tree = scratch / "payload"
    for name in release_files(harness.ROOT):
        target = tree / "chatsys" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(harness.ROOT / name, target)
    shutil.copytree(wheels, tree / "wheels")
    shutil.copy2(ferretdb, tree / "ferretdb")
    size = sum(path.stat().st_size for path in tree.rglob("*") if path.is_file())
    disk = scratch / "payload.img"
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "chatsys-payload",
            "-d",
            str(tree),
            str(disk),
            f"{size * 3 // 2 // 2**20 + 64}M",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(tree)
    return disk


def host_ferretdb() -> Path:
    """The host's FerretDB build, at the path scripts/lib/common.sh names (built when missing)."""
    subprocess.run([str(harness.ROOT / "scripts/ferretdb.sh"), "build"], check=True, timeout=1800)
    path = subprocess.run(
        ["bash", "-c", 'source scripts/lib/common.sh && printf %s "$FERRETDB_BIN"'],
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return Path(path)


def new_scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="chatsys-vm-"))
