"""HAProxy's runtime API: one command on its Unix socket, the whole answer back.

Command line, for the shell scripts (`haproxy_cmd` in common.sh; standard library only, the
checkout on PYTHONPATH):
    python3 -m scripts.lib.haproxy_runtime SOCKET "COMMAND"
prints HAProxy's answer to COMMAND (e.g. `show stat`, `disable server chat_servers/chat1`).
"""

from __future__ import annotations

import socket
import sys


def command(socket_path: str, line: str, timeout: float = 5) -> str:
    """HAProxy closes the connection after answering one command (no `prompt` mode)."""
    with socket.socket(socket.AF_UNIX) as runtime:
        runtime.settimeout(timeout)
        runtime.connect(socket_path)
        runtime.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := runtime.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print('usage: python3 -m scripts.lib.haproxy_runtime SOCKET "COMMAND"', file=sys.stderr)
        return 2
    sys.stdout.write(command(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
