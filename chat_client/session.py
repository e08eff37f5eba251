"""The saved login: `${XDG_CONFIG_HOME:-~/.config}/chatsys/session.json`, readable by its owner only.

The token is a password for as long as it lives, so the folder is 0700 and the file is
created 0600 from its first byte (never written first and narrowed afterwards).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


class SessionError(Exception):
    """The session file exists but cannot be used; str() is the line to show."""


@dataclass(frozen=True)
class Session:
    username: str
    token: str
    expires_at: str


def config_dir() -> Path:
    configured = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = Path(configured) if os.path.isabs(configured) else Path.home() / ".config"
    return base / "chatsys"


def session_path() -> Path:
    return config_dir() / "session.json"


def load() -> Session | None:
    path = session_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Session(str(data["username"]), str(data["token"]), str(data.get("expires_at", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SessionError(
            f"cannot read the session file {path} ({error.__class__.__name__}); run: python -m chat_client login USER"
        ) from None


def save(session: Session) -> Path:
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # also when it existed before with wider rights
    path = folder / "session.json"
    partial = folder / f".session.json.{os.getpid()}"
    partial.unlink(missing_ok=True)  # left over by a run that died in the middle
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)  # a umask can only narrow it; make it exact
            json.dump(asdict(session), file)
            file.write("\n")
        # A rename replaces the old file at once: no reader ever sees half a session.
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def forget() -> bool:
    """Delete the saved session; False when there was none."""
    try:
        session_path().unlink()
        return True
    except FileNotFoundError:
        return False
