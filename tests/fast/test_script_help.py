"""Every operator script answers `--help` with its whole usage and does nothing else: exit
0, the text names the command, every option the script parses is in it, no line of the
script's code leaks into it, and no paragraph stops mid-sentence. Starts no service: a
script that would run instead of helping fails here on its exit status or its text."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# lib/common.sh is sourced by the others, never run.
SCRIPTS = sorted(path for path in (ROOT / "scripts").glob("*.sh") if path.name != "lib/common.sh")
# A paragraph whose last word is one of these was cut off in the middle of a sentence.
UNFINISHED = set("a an and as by for from in of or that the then to which with".split())
# Lines of shell that a header printed by line numbers picks up when the header changes.
SHELL_CODE = re.compile(r"^\s*(set -[euxo]|source |shopt |[A-Za-z_]+\(\) \{|esac$|fi$|done$)")

pytestmark = pytest.mark.fast


def options_parsed(script: Path) -> set[str]:
    """The options a script takes: the patterns of its `case` branches and `[[ ... == --x ]]`
    tests, and the add_argument calls of the Python program it hands its arguments to."""
    text = script.read_text()
    options: set[str] = set()
    for pattern in re.findall(r"^\s*((?:-[-\w]+)(?:\|-[-\w]+)*)\)", text, re.M):
        options.update(pattern.split("|"))
    options.update(re.findall(r"== (--[-\w]+)\b", text))
    for program in re.findall(r"scripts/(\w+\.py)\" \"\$@\"", text):
        options.update(re.findall(r"add_argument\(\s*\"(-[-\w]+)\"", (ROOT / "scripts" / program).read_text()))
    options -= {"--", "-h", "--help"}
    return options


def paragraphs(text: str) -> list[str]:
    return [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help_prints_the_whole_usage_and_exits_0(script: Path):
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, f"{script.name} --help exited {done.returncode}:\n{done.stdout}{done.stderr}"
    text = done.stdout
    assert "usage" in text.lower() or script.name in text, f"{script.name} --help names no command:\n{text}"
    leaked = [line for line in text.splitlines() if SHELL_CODE.match(line)]
    assert not leaked, f"{script.name} --help prints its own code: {leaked}"
    missing = {option for option in options_parsed(script) if not re.search(rf"{re.escape(option)}\b", text)}
    assert not missing, f"{script.name} --help does not mention {sorted(missing)}"
    for paragraph in paragraphs(text):
        last_word = re.sub(r"[^\w,;]+$", "", paragraph.split()[-1])
        assert not last_word.endswith((",", ";")) and last_word.lower() not in UNFINISHED, (
            f"{script.name} --help stops mid-sentence: ...{paragraph[-80:]!r}"
        )
