"""Command line of the chat client: argparse subcommands over `api.ChatsysClient`.

Exit status: 0 done, 1 the request failed (one line on stderr says why), 2 bad usage.
"""
from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from datetime import datetime

from chat_client import session as saved_session
from chat_client.api import ChatsysClient, NotLoggedIn, ServiceError, ServiceUrls

DEFAULT_URLS = {"chat": "http://127.0.0.1:5000", "login": "http://127.0.0.1:4100",
                "profile": "http://127.0.0.1:4200"}
MAX_PAGE = 200  # the contract's largest `limit`
LONG_POLL_SECONDS = 25  # `wait` of each long poll (the contract allows up to 30)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

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
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.client = ChatsysClient(resolve_urls(args))

    def resume_session(self) -> saved_session.Session:
        """The saved session, with its token handed to the client."""
        current = saved_session.load()
        if current is None:
            raise NotLoggedIn()
        self.client.token = current.token
        return current


def resolve_urls(args: argparse.Namespace) -> ServiceUrls:
    """Flag, else CHATSYS_<SERVICE>_URL, else the contract's default port on this host."""
    urls = {}
    for service, default in DEFAULT_URLS.items():
        given = getattr(args, f"{service}_url", None) or os.environ.get(f"CHATSYS_{service.upper()}_URL") or default
        urls[service] = given.rstrip("/")
    return ServiceUrls(**urls)


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise CliError("no password on standard input")
        return password
    try:
        password = getpass.getpass(f"Password for {args.username}: ")
        if confirm and getpass.getpass("Repeat the password: ") != password:
            raise CliError("the two passwords differ")
    except EOFError:
        raise CliError("no password given") from None
    return password


# Commands


def cmd_register(context: Context) -> int:
    args = context.args
    created = context.client.register(args.username, read_password(args, confirm=True))
    show(f"registered {created['username']}; now run: python -m chat_client login {created['username']}")
    return EXIT_OK


def cmd_login(context: Context) -> int:
    args = context.args
    answer = context.client.login(args.username, read_password(args))
    try:
        path = saved_session.save(saved_session.Session(answer["username"], answer["token"], answer["expires_at"]))
    except OSError as error:
        raise CliError(f"logged in, but cannot save the session: {error}") from None
    show(f"logged in as {answer['username']} until {local_time(answer['expires_at'], '%Y-%m-%d %H:%M')}"
         f" (session in {path})")
    return EXIT_OK


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


def cmd_whoami(context: Context) -> int:
    context.resume_session()
    answer = context.client.validate()
    show(f"{answer['username']} (session valid until {local_time(answer['expires_at'], '%Y-%m-%d %H:%M')})")
    return EXIT_OK


def cmd_rooms(context: Context) -> int:
    context.resume_session()
    rooms = context.client.rooms()
    width = max([len("ROOM")] + [len(room["name"]) for room in rooms])
    show(f"{'ROOM':<{width}}  {'MESSAGES':>8}  CREATED")
    for room in rooms:
        show(f"{room['name']:<{width}}  {room['last_seq']:>8}  {local_time(room['created_at'], '%Y-%m-%d %H:%M')}")
    return EXIT_OK


def cmd_create_room(context: Context) -> int:
    context.resume_session()
    room = context.client.create_room(context.args.name)
    show(f"created room {room['name']}")
    return EXIT_OK


def cmd_send(context: Context) -> int:
    context.resume_session()
    text = " ".join(context.args.text)
    show(message_line(context.client.send(context.args.room, text)))
    return EXIT_OK


def cmd_read(context: Context) -> int:
    args = context.args
    context.resume_session()
    page = context.client.messages(args.room, after=args.after, limit=args.limit)
    for message in page["messages"]:
        show(message_line(message))
    if args.after is not None and len(page["messages"]) == (args.limit or 50):
        note(f"more may follow: python -m chat_client read {args.room} --after {page['next_after']}")
    return EXIT_OK


def cmd_follow(context: Context) -> int:
    args = context.args
    context.resume_session()
    client = context.client
    deadline = time.monotonic() + args.max_seconds if args.max_seconds is not None else None
    try:
        # The newest --last messages, or with --last 0 only the point to continue from.
        first = client.messages(args.room, limit=max(args.last, 1))
        after = first["next_after"]
        for message in first["messages"] if args.last else []:
            show(message_line(message))
        if sys.stderr.isatty():
            note(f"following {args.room}; Ctrl-C to stop")
        # Long polls while the service takes `wait` (contract v1.1): each request is held
        # until a message arrives. A v1 service answers `wait` with 400: then plain polls.
        pause, trouble, long_poll = 0.0, None, not args.poll
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
            pause = args.interval
            try:
                page = client.messages(args.room, after=after, limit=MAX_PAGE, wait=wait)
            except ServiceError as error:
                if long_poll and error.status == 400:
                    note(f"the chat service does not hold requests (no wait); polling every {args.interval:g} s")
                    long_poll = False
                    continue
                if not (error.transient or error.status == 429):
                    raise
                # Nothing is lost while the service is away: polling resumes at `after`.
                if trouble is None:
                    note(f"warning: {error}; still trying")
                trouble = error
                pause = max(args.interval, error.retry_after or 0)
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
                pause = min(args.interval, 1.0)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_profile(context: Context) -> int:
    current = context.resume_session()
    profile = context.client.profile(context.args.username or current.username)
    show_profile(profile)
    return EXIT_OK


def cmd_profile_edit(context: Context) -> int:
    args = context.args
    changes = {field: value for field, value in (("display_name", args.display_name), ("bio", args.bio),
                                                 ("avatar_url", args.avatar_url)) if value is not None}
    if not changes:
        args.subparser.error("give at least one of --display-name, --bio, --avatar-url")
    current = context.resume_session()
    show_profile(context.client.update_profile(current.username, changes))
    return EXIT_OK


def show_profile(profile: dict) -> None:
    labels = [("username", "username"), ("display name", "display_name"), ("bio", "bio"),
              ("avatar url", "avatar_url")]
    for label, field in labels:
        show(f"{label + ':':<14}{safe_text(profile[field], indent=14)}")
    show(f"{'updated:':<14}{local_time(profile['updated_at'], '%Y-%m-%d %H:%M:%S')}")


# Parser


def _name(pattern: str, rule: str):
    """Names as the contract allows them, checked before a request makes a confusing 404."""
    def parse(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        return text
    return parse


ROOM = _name(r"[A-Za-z0-9_\-]{1,64}", "room names are 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
USERNAME = _name(r"[A-Za-z0-9_.\-]{3,32}", "user names are 3 to 32 characters of A-Z, a-z, 0-9, _, . and -")


def _count(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise argparse.ArgumentTypeError(f"must be {minimum}{upper}")
        return value
    return parse


def _seconds(positive: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not value == value or value < 0 or (positive and value == 0) or value == float("inf"):
            raise argparse.ArgumentTypeError("must be a positive number of seconds")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    # The URL flags are accepted before or after the command; SUPPRESS keeps a subcommand
    # from overwriting a flag given before it with an empty default.
    urls = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for service, default in DEFAULT_URLS.items():
        urls.add_argument(f"--{service}-url", metavar="URL",
                          help=f"{service} service (env CHATSYS_{service.upper()}_URL, default {default})")

    parser = argparse.ArgumentParser(prog="python -m chat_client", parents=[urls],
                                     description="Terminal client of the chatsys chat service.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[urls], help=help_text, description=help_text)
        sub.set_defaults(handler=handler, subparser=sub)
        return sub

    def password_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("username", metavar="USER", type=USERNAME)
        sub.add_argument("--password-stdin", action="store_true",
                         help="read the password from the first line of standard input (for scripts)")

    password_options(command("register", cmd_register, "create an account"))
    password_options(command("login", cmd_login, "log in and keep the session for the other commands"))
    command("logout", cmd_logout, "end the session, on the server too")
    command("whoami", cmd_whoami, "show who is logged in")
    command("rooms", cmd_rooms, "list the rooms")
    command("create-room", cmd_create_room, "create a room").add_argument("name", metavar="NAME", type=ROOM)

    send = command("send", cmd_send, "post a message")
    send.add_argument("room", metavar="ROOM", type=ROOM)
    send.add_argument("text", metavar="TEXT", nargs="+", help="the words of the message")

    follow = command("follow", cmd_follow, "print a room's messages live as they arrive")
    follow.add_argument("room", metavar="ROOM", type=ROOM)
    follow.add_argument("--last", type=_count(0, MAX_PAGE), default=20, metavar="N",
                        help="show the newest N messages first (default 20)")
    follow.add_argument("--interval", type=_seconds(positive=True), default=1.0, metavar="SECONDS",
                        help="time between plain polls (default 1)")
    follow.add_argument("--poll", action="store_true",
                        help="poll every --interval instead of long polls held by the service")
    follow.add_argument("--max-seconds", type=_seconds(positive=False), metavar="SECONDS",
                        help="stop after this long (default: until Ctrl-C)")

    read = command("read", cmd_read, "print a room's messages: the newest, or those after a seq")
    read.add_argument("room", metavar="ROOM", type=ROOM)
    read.add_argument("--after", type=_count(0), metavar="N", help="only messages with seq above N")
    read.add_argument("--limit", type=_count(1, MAX_PAGE), metavar="N", help="at most N messages (default 50)")

    command("profile", cmd_profile, "show a profile (yours by default)").add_argument(
        "username", metavar="USER", nargs="?", type=USERNAME)

    edit = command("profile-edit", cmd_profile_edit, "change your profile")
    edit.add_argument("--display-name", metavar="TEXT")
    edit.add_argument("--bio", metavar="TEXT", help='"" clears it')
    edit.add_argument("--avatar-url", metavar="URL", help='an http(s) URL; "" clears it')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    context = Context(args)
    try:
        return args.handler(context)
    except (ServiceError, CliError, saved_session.SessionError) as error:
        note(f"error: {error}")
        return EXIT_FAILED
    except KeyError as missing:
        note(f"error: a service sent an answer without the field {missing}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        note("")
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other command line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        context.client.close()
