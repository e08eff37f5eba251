"""Command line of the chat client: click commands over `api.ChatsysClient`.

Exit status: 0 done, 1 the request failed (one line on stderr says why), 2 bad usage.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime

import click

from chat_client import session as saved_session
from chat_client.api import ChatsysClient, NotLoggedIn, ServiceError, ServiceUrls
from service_kit import names
from service_kit.config import PUBLIC_PORTS

PROG = "python -m chat_client"
DEFAULT_URLS = {service: f"http://127.0.0.1:{port}" for service, port in PUBLIC_PORTS.items()}
MAX_PAGE = 200  # the contract's largest `limit`
LONG_POLL_SECONDS = 25  # `wait` of each long poll (the contract allows up to 30)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Characters that would let a message steer the terminal (escape sequences, carriage
# returns) or reorder what is shown around it (bidirectional overrides).
_BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


class CliError(Exception):
    """A failure found by the client itself; str() is the line to show."""


# Output


def safe_text(text: str, indent: int = 0) -> str:
    """Text from other people, made harmless for a terminal; extra lines are indented."""
    shown = []
    for char in text:
        code = ord(char)
        if char == "\n":
            shown.append("\n" + " " * indent)
        elif char == "\t":
            shown.append(char)
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI_CONTROLS:
            shown.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            shown.append(char)
    return "".join(shown)


def local_time(timestamp: str, pattern: str) -> str:
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return str(timestamp)
    return moment.astimezone().strftime(pattern)


def message_line(message: dict) -> str:
    prefix = f"[{local_time(message['created_at'], '%H:%M:%S')}] #{message['seq']} {message['author']}: "
    return prefix + safe_text(message["text"], indent=len(prefix))


def show(line: str) -> None:
    # Flushed line by line so `follow` is live even when its output goes to a pipe.
    print(line, flush=True)


def note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# Setup shared by the commands


class Context:
    def __init__(self, urls: ServiceUrls):
        self.client = ChatsysClient(urls)

    def resume_session(self) -> saved_session.Session:
        """The saved session, with its token handed to the client."""
        current = saved_session.load()
        if current is None:
            raise NotLoggedIn()
        self.client.token = current.token
        return current


def read_password(username: str, from_stdin: bool, confirm: bool = False) -> str:
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise CliError("no password on standard input")
        return password
    try:
        # On stderr, like getpass on a terminal: standard output stays for the results.
        return click.prompt(
            f"Password for {username}",
            hide_input=True,
            err=True,
            confirmation_prompt="Repeat the password" if confirm else False,
        )
    except click.Abort as aborted:
        if isinstance(aborted.__context__, EOFError):
            raise CliError("no password given") from None
        raise  # Ctrl-C: exit status 130, as for any interrupted command


# Names as the contract allows them, checked before a request makes a confusing 404.


class Name(click.ParamType):
    def __init__(self, name: str, pattern: str, rule: str):
        self.name, self.pattern, self.rule = name, pattern, rule

    def convert(self, value, param, ctx) -> str:
        if not re.fullmatch(self.pattern, value):
            self.fail(f"{value!r}: {self.rule}", param, ctx)
        return value


ROOM = Name("room", names.ROOM_NAME, "room names are " + names.ROOM_NAME_RULE)
USERNAME = Name("user", names.USERNAME, "user names are " + names.USERNAME_RULE)


class Seconds(click.FloatRange):
    """A finite number of seconds, 0 or more (above 0 when `positive`)."""

    def __init__(self, positive: bool):
        super().__init__(min=0, min_open=positive)

    def convert(self, value, param, ctx) -> float:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


def url_options(from_environment: bool) -> list[click.Option]:
    """--chat-url, --login-url, --profile-url. Accepted before the command (where the
    environment and the defaults apply) and after it (where a flag given wins)."""
    return [
        click.Option(
            [f"--{service}-url", f"{service}_url"],
            metavar="URL",
            envvar=f"CHATSYS_{service.upper()}_URL" if from_environment else None,
            default=default if from_environment else None,
            help=f"{service} service (env CHATSYS_{service.upper()}_URL, default {default})",
        )
        for service, default in DEFAULT_URLS.items()
    ]


def password_options() -> list[click.Parameter]:
    return [
        click.Argument(["username"], metavar="USER", type=USERNAME),
        click.Option(
            ["--password-stdin"],
            is_flag=True,
            help="read the password from the first line of standard input (for scripts)",
        ),
    ]


def _remember_urls(**urls: str) -> None:
    click.get_current_context().obj = urls


cli = click.Group(
    PROG,
    params=url_options(from_environment=True),
    callback=_remember_urls,
    help="Terminal client of the chatsys chat service.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def resolve_urls(given: dict[str, str | None]) -> ServiceUrls:
    """Flag after the command, else the one before it, else CHATSYS_<SERVICE>_URL, else the
    contract's default port on this host."""
    before = click.get_current_context().find_root().obj or {}
    return ServiceUrls(
        **{service: (given[f"{service}_url"] or before[f"{service}_url"]).rstrip("/") for service in DEFAULT_URLS}
    )


def command(name: str, help_text: str, *params: click.Parameter):
    """Add `handler(context, **params)` to the command line as `name`: with the URL options,
    one line on stderr and exit status 1 for a failed request, and the client closed after."""

    def register(handler: Callable[..., int]) -> Callable[..., int]:
        def run(chat_url: str | None, login_url: str | None, profile_url: str | None, **values) -> int:
            context = Context(resolve_urls({"chat_url": chat_url, "login_url": login_url, "profile_url": profile_url}))
            try:
                return handler(context, **values)
            except (ServiceError, CliError, saved_session.SessionError) as error:
                note(f"error: {error}")
                return EXIT_FAILED
            except KeyError as missing:
                note(f"error: a service sent an answer without the field {missing}")
                return EXIT_FAILED
            except BrokenPipeError:
                # The reader went away (`... | head`): stop quietly, as other command line tools do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return EXIT_FAILED
            finally:
                context.client.close()

        cli.add_command(
            click.Command(
                name,
                callback=run,
                params=[*params, *url_options(from_environment=False)],
                help=help_text,
                short_help=help_text,
            )
        )
        return handler

    return register


# Commands


@command("register", "create an account", *password_options())
def cmd_register(context: Context, username: str, password_stdin: bool) -> int:
    created = context.client.register(username, read_password(username, password_stdin, confirm=True))
    show(f"registered {created['username']}; now run: {PROG} login {created['username']}")
    return EXIT_OK


@command("login", "log in and keep the session for the other commands", *password_options())
def cmd_login(context: Context, username: str, password_stdin: bool) -> int:
    answer = context.client.login(username, read_password(username, password_stdin))
    try:
        path = saved_session.save(saved_session.Session(answer["username"], answer["token"], answer["expires_at"]))
    except OSError as error:
        raise CliError(f"logged in, but cannot save the session: {error}") from None
    show(
        f"logged in as {answer['username']} until {local_time(answer['expires_at'], '%Y-%m-%d %H:%M')}"
        f" (session in {path})"
    )
    return EXIT_OK


@command("logout", "end the session, on the server too")
def cmd_logout(context: Context) -> int:
    current = saved_session.load()
    if current is None:
        show("not logged in")
        return EXIT_OK
    context.client.token = current.token
    try:
        context.client.logout()
    except NotLoggedIn:
        pass  # the token had already ended: nothing left to revoke
    except ServiceError as error:
        # Keep the token: deleting it here would leave it alive on the server, out of reach.
        raise CliError(f"{error}; the session is kept, run logout again") from None
    saved_session.forget()
    show(f"logged out {current.username}")
    return EXIT_OK


@command("whoami", "show who is logged in")
def cmd_whoami(context: Context) -> int:
    context.resume_session()
    answer = context.client.validate()
    show(f"{answer['username']} (session valid until {local_time(answer['expires_at'], '%Y-%m-%d %H:%M')})")
    return EXIT_OK


@command("rooms", "list the rooms")
def cmd_rooms(context: Context) -> int:
    context.resume_session()
    rooms = context.client.rooms()
    width = max([len("ROOM")] + [len(room["name"]) for room in rooms])
    show(f"{'ROOM':<{width}}  {'MESSAGES':>8}  CREATED")
    for room in rooms:
        show(f"{room['name']:<{width}}  {room['last_seq']:>8}  {local_time(room['created_at'], '%Y-%m-%d %H:%M')}")
    return EXIT_OK


@command("create-room", "create a room", click.Argument(["name"], metavar="NAME", type=ROOM))
def cmd_create_room(context: Context, name: str) -> int:
    context.resume_session()
    room = context.client.create_room(name)
    show(f"created room {room['name']}")
    return EXIT_OK


@command(
    "send",
    "post a message",
    click.Argument(["room"], metavar="ROOM", type=ROOM),
    click.Argument(["text"], metavar="TEXT...", nargs=-1, required=True),
)
def cmd_send(context: Context, room: str, text: tuple[str, ...]) -> int:
    context.resume_session()
    show(message_line(context.client.send(room, " ".join(text))))
    return EXIT_OK


@command(
    "read",
    "print a room's messages: the newest, or those after a seq",
    click.Argument(["room"], metavar="ROOM", type=ROOM),
    click.Option(["--after"], type=click.IntRange(min=0), metavar="N", help="only messages with seq above N"),
    click.Option(["--limit"], type=click.IntRange(1, MAX_PAGE), metavar="N", help="at most N messages (default 50)"),
)
def cmd_read(context: Context, room: str, after: int | None, limit: int | None) -> int:
    context.resume_session()
    page = context.client.messages(room, after=after, limit=limit)
    for message in page["messages"]:
        show(message_line(message))
    if after is not None and len(page["messages"]) == (limit or 50):
        note(f"more may follow: {PROG} read {room} --after {page['next_after']}")
    return EXIT_OK


@command(
    "follow",
    "print a room's messages live as they arrive",
    click.Argument(["room"], metavar="ROOM", type=ROOM),
    click.Option(
        ["--last"],
        type=click.IntRange(0, MAX_PAGE),
        default=20,
        metavar="N",
        help="show the newest N messages first (default 20)",
    ),
    click.Option(
        ["--interval"],
        type=Seconds(positive=True),
        default=1.0,
        metavar="SECONDS",
        help="time between plain polls (default 1)",
    ),
    click.Option(["--poll"], is_flag=True, help="poll every --interval instead of long polls held by the service"),
    click.Option(
        ["--max-seconds"],
        type=Seconds(positive=False),
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    ),
)
def cmd_follow(context: Context, room: str, last: int, interval: float, poll: bool, max_seconds: float | None) -> int:
    context.resume_session()
    client = context.client
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    try:
        # The newest --last messages, or with --last 0 only the point to continue from.
        first = client.messages(room, limit=max(last, 1))
        after = first["next_after"]
        for message in first["messages"] if last else []:
            show(message_line(message))
        if sys.stderr.isatty():
            note(f"following {room}; Ctrl-C to stop")
        # Long polls while the service takes `wait` (contract v1.1): each request is held
        # until a message arrives. A v1 service answers `wait` with 400: then plain polls.
        pause: float = 0.0
        trouble: ServiceError | None = None
        long_poll = not poll
        while True:
            wait = LONG_POLL_SECONDS if long_poll else None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return EXIT_OK
                pause = min(pause, remaining)
                if wait is not None:
                    wait = max(1, min(wait, int(remaining)))
            time.sleep(pause)
            pause = interval
            try:
                page = client.messages(room, after=after, limit=MAX_PAGE, wait=wait)
            except ServiceError as error:
                if long_poll and error.status == 400:
                    note(f"the chat service does not hold requests (no wait); polling every {interval:g} s")
                    long_poll = False
                    continue
                if not (error.transient or error.status == 429):
                    raise
                # Nothing is lost while the service is away: polling resumes at `after`.
                if trouble is None:
                    note(f"warning: {error}; still trying")
                trouble = error
                pause = max(interval, error.retry_after or 0)
                continue
            if trouble is not None:
                note("reconnected")
                trouble = None
            for message in page["messages"]:
                if message["seq"] > after:
                    show(message_line(message))
                    after = message["seq"]
            after = max(after, page["next_after"])
            if len(page["messages"]) == MAX_PAGE or (long_poll and page["messages"]):
                pause = 0  # a backlog to fetch, or the next long poll to start at once
            elif long_poll:
                # An empty page after a wait: a server that ignores `wait` answers at once,
                # so a short pause keeps such a server from being asked in a tight loop.
                pause = min(interval, 1.0)
    except KeyboardInterrupt:
        return EXIT_OK


@command(
    "profile",
    "show a profile (yours by default)",
    click.Argument(["username"], metavar="[USER]", type=USERNAME, required=False),
)
def cmd_profile(context: Context, username: str | None) -> int:
    current = context.resume_session()
    show_profile(context.client.profile(username or current.username))
    return EXIT_OK


@command(
    "profile-edit",
    "change your profile",
    click.Option(["--display-name"], metavar="TEXT"),
    click.Option(["--bio"], metavar="TEXT", help='"" clears it'),
    click.Option(["--avatar-url"], metavar="URL", help='an http(s) URL; "" clears it'),
)
def cmd_profile_edit(context: Context, display_name: str | None, bio: str | None, avatar_url: str | None) -> int:
    changes = {
        field: value
        for field, value in (("display_name", display_name), ("bio", bio), ("avatar_url", avatar_url))
        if value is not None
    }
    if not changes:
        raise click.UsageError("give at least one of --display-name, --bio, --avatar-url")
    current = context.resume_session()
    show_profile(context.client.update_profile(current.username, changes))
    return EXIT_OK


def show_profile(profile: dict) -> None:
    labels = [("username", "username"), ("display name", "display_name"), ("bio", "bio"), ("avatar url", "avatar_url")]
    for label, field in labels:
        show(f"{label + ':':<14}{safe_text(profile[field], indent=14)}")
    show(f"{'updated:':<14}{local_time(profile['updated_at'], '%Y-%m-%d %H:%M:%S')}")


def main(argv: list[str] | None = None) -> int:
    try:
        status = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.ClickException as error:  # bad usage: click's message, exit status 2
        error.show()
        return error.exit_code
    except click.Abort:  # Ctrl-C; click has ended the line on stderr
        return EXIT_INTERRUPTED
    return status if isinstance(status, int) else EXIT_OK
