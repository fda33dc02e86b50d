"""The two test tiers: `make test` runs every test, `make test-fast` the ones not marked slow (`-m "not slow"`).

tests/conftest.py marks them from tests/tiers.py (SLOW_FOLDERS, SLOW_TESTS): its tables must name tests that exist, every test that starts
a process must be slow, and the fast tier must keep tests of every layer.
"""

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

from tests.tiers import ALL, SLOW_FOLDERS, SLOW_TESTS, TESTS, is_slow, tier_key


# The layers the fast tier must test (folders of tests/)
LAYERS = ("penalty", "capture", "mixin", "trainers", "monosemanticity", "evaluation", "cli")


def suite_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def rel(path: Path) -> str:
    return path.relative_to(TESTS).as_posix()


@functools.cache
def functions(path: Path) -> tuple[dict[str, ast.AST], dict[str, str]]:
    """The module-level functions and the methods of classes of a file ("Class::name"), and the names it imports
    from modules (name -> module)."""
    tree = ast.parse(path.read_text())
    found, imported = {}, {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}::{sub.name}"] = sub
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update({alias.asname or alias.name: node.module for alias in node.names})
    return found, imported


def names_in(path: Path) -> list[str]:
    """The test names pytest collects from a file (parameters aside): `test*` functions, `test*` methods of `Test*`."""
    return [
        name
        for name in functions(path)[0]
        if name.startswith("test") or (name.startswith("Test") and name.split("::")[-1].startswith("test"))
    ]


def starts_a_process(node: ast.AST, imported: dict[str, str]) -> bool:
    """Whether the code of ``node`` itself uses `subprocess` (or names imported from it) or os.system / os.popen."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and (sub.id == "subprocess" or imported.get(sub.id) == "subprocess"):
            return True
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "os"
            and sub.attr in ("system", "popen", "fork", "execv", "spawnv")
        ):
            return True
    return False


def process_tests(path: Path) -> list[str]:
    """The tests of a file that start a process, in their own code or through the file's functions (its decorators
    and helpers) and the functions it imports from the test helper modules (tests/helpers.py, a helper in its folder)."""
    own, imports = functions(path)
    table: dict = {}  # name -> (function, the names its module imports, the table its calls resolve in)
    table.update({name: (node, imports, table) for name, node in own.items()})
    for name, module in imports.items():
        if module.split(".")[0] != "tests":  # only the test helper modules (tests.helpers, tests.<folder>.<helper>)
            continue
        helper = TESTS.parent.joinpath(*module.split(".")).with_suffix(".py")
        helper = helper if helper.is_file() else None
        if helper is not None and helper != path and name not in table:
            theirs, their_imports = functions(helper)
            their_table: dict = {}
            their_table.update({n: (node, their_imports, their_table) for n, node in theirs.items()})
            if name in their_table:
                table[name] = their_table[name]
    seen: dict[int, bool] = {}

    def starts(node, node_imports, names) -> bool:
        if id(node) not in seen:
            seen[id(node)] = False  # a recursive helper
            called = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and sub.id in names}
            seen[id(node)] = starts_a_process(node, node_imports) or any(starts(*names[c]) for c in called)
        return seen[id(node)]

    return [name for name in names_in(path) if starts(*table[name])]


def test_the_tables_name_files_and_tests_that_exist():
    for file, names in SLOW_TESTS.items():
        path = TESTS / file
        assert path.is_file(), f"SLOW_TESTS in tests/tiers.py names {file}, which does not exist: rename it"
        if names != ALL:
            missing = sorted(set(names) - set(names_in(path)))
            assert not missing, f"SLOW_TESTS[{file!r}] names tests that do not exist (renamed?): {missing}"
    for folder in SLOW_FOLDERS:
        assert list((TESTS / folder).rglob("test_*.py")), f"SLOW_FOLDERS names {folder}, which holds no test"


def test_every_test_that_starts_a_process_is_slow():
    fast = [
        f"{rel(path)}::{name}"
        for path in suite_files()
        for name in process_tests(path)
        if not is_slow(rel(path), name)
    ]
    assert not fast, f"these tests start a process: add them to SLOW_TESTS in tests/tiers.py: {fast}"


def test_the_process_finder_finds_the_known_ones():
    """It follows helpers and decorators: the CLI tests that run the console script through a helper are found."""
    found = {f"{rel(path)}::{name}" for path in suite_files() for name in process_tests(path)}
    assert {
        "cli/test_train.py::test_the_command_launches_the_script_end_to_end",
        "cli/test_cli.py::test_installed_console_script",
    } <= found
    assert "penalty/test_penalty.py::test_matches_brute_force" not in found


def test_every_test_of_a_slow_folder_is_slow_and_every_layer_keeps_fast_tests():
    tiers = {(rel(path), name): is_slow(rel(path), name) for path in suite_files() for name in names_in(path)}
    for folder in SLOW_FOLDERS:
        tests = [key for key in tiers if key[0].startswith(f"{folder}/")]
        assert tests and all(tiers[key] for key in tests), folder
    for layer in LAYERS:
        fast = [key for key, slow in tiers.items() if key[0].startswith(f"{layer}/") and not slow]
        assert fast, f"the fast tier has no test of tests/{layer}"
    assert sum(not slow for slow in tiers.values()) > len(tiers) / 3  # counted in test functions, not parameters


def test_the_collected_tests_carry_the_mark_of_their_tier(request):
    """The hook marked what this session collected (the whole suite under `make test`)."""
    items = [item for item in request.session.items if tier_key(item) is not None]
    assert request.node in items
    unmarked = [item.nodeid for item in items if is_slow(*tier_key(item)) and not item.get_closest_marker("slow")]
    assert not unmarked
    assert not request.node.get_closest_marker("slow")


def test_pytest_selects_the_fast_tier_as_make_test_fast_does():
    """`pytest -m "not slow" tests`, collected in a fresh process: no test of a slow folder or table, every layer."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"],
        cwd=TESTS.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    keys = [
        (line.split("::")[0].removeprefix("tests/"), "::".join(line.split("::")[1:]).split("[")[0]) for line in ids
    ]
    assert keys and not [key for key in keys if is_slow(*key)]
    assert all(any(file.startswith(f"{layer}/") for file, _ in keys) for layer in LAYERS)
    assert "deselected" in done.stdout.splitlines()[-1]
