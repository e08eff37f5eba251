"""The settings table of docs/architecture.md names exactly the environment variables the
one reader of settings (service_kit/config.py: the services' and gunicorn's) reads, and
gunicorn's settings file (conf/gunicorn.conf.py) reads none itself. In-process: it reads
the files' code and the document, and starts nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
READERS = ("service_kit/config.py",)
# service_kit/config.py's helpers that read one variable, named by their first argument.
HELPERS = {"_int", "_float", "_words", "_choice"}

pytestmark = pytest.mark.fast


def _is_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def variables_read(path: Path) -> set[str]:
    """Names given as literals to os.environ.get, os.environ[...], os.getenv and HELPERS
    (whose own reads, of their parameter, are not settings)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside_helpers = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and function.name in HELPERS
        for node in ast.walk(function)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in inside_helpers:
            continue
        name = None
        if isinstance(node, ast.Call) and node.args:
            function = node.func
            if isinstance(function, ast.Attribute) and function.attr == "get" and _is_environ(function.value):
                name = node.args[0]
            elif (
                isinstance(function, ast.Attribute)
                and function.attr == "getenv"
                and isinstance(function.value, ast.Name)
                and function.value.id == "os"
            ):
                name = node.args[0]
            elif isinstance(function, ast.Name) and function.id in HELPERS:
                name = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = node.slice
        if name is not None:
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                f"{path.name}:{getattr(node, 'lineno', '?')}: a variable named by an expression cannot be checked against the docs"
            )
            found.add(name.value)
    return found


def documented() -> dict[str, set[str]]:
    """Reader file -> the variables the table says it reads."""
    section = DOC.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "docs/architecture.md has no settings table"
    table: dict[str, set[str]] = {reader: set() for reader in READERS}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        readers = re.findall(r"`([^`]+)`", cells[2])
        assert names and readers, f"a settings row without names or readers: {row}"
        for reader in readers:
            assert reader in table, f"{reader} is not one of the readers {READERS}: {row}"
            table[reader].update(names)
    return table


def test_every_setting_read_is_in_the_settings_table_and_every_row_is_read():
    table = documented()
    for reader in READERS:
        read = variables_read(ROOT / reader)
        assert read, f"found no environment variables read in {reader}"
        assert read - table[reader] == set(), f"read by {reader} but not in the settings table"
        assert table[reader] - read == set(), f"in the settings table as read by {reader}, but it does not"


def test_the_reader_sees_each_way_config_reads_a_variable():
    # _int, _float, os.environ.get with and without a default, and .get(...).lower().
    read = variables_read(ROOT / "service_kit/config.py")
    assert {"PORT", "WAIT_POLL_SECONDS", "MONGO_URI", "CORS_ORIGINS", "TOKEN_CACHE"} <= read


def test_gunicorns_settings_file_reads_the_environment_only_through_the_reader():
    assert variables_read(ROOT / "conf/gunicorn.conf.py") == set()
