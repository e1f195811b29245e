"""The `buffalo` command stays a thin layer: its SQL lives in `buffalo_assets/storage/`, and it
never changes its own process's environment or working folder (Dagster processes are handed
theirs explicitly, `buffalo_assets/cli/dev.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

CLI = ROOT / "buffalo_assets" / "cli"
# Calls on os that change the process: its working folder or its environment.
OS_CHANGES = {"chdir", "fchdir", "putenv", "unsetenv"}
# Methods of os.environ that write it.
ENVIRON_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def layering_violations(source: str) -> list[str]:
    """Raw SQL (`sa.text(`, `sqlalchemy.text`), `os.chdir` and the like, and writes to `os.environ`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"{line}: imports sqlalchemy's text" for alias in node.names if alias.name == "text"]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, name = node.func.value, node.func.attr
            if name == "text" and isinstance(owner, ast.Name) and owner.id in ("sa", "sqlalchemy"):
                found.append(f"{line}: raw SQL ({owner.id}.text)")
            if name in OS_CHANGES and isinstance(owner, ast.Name) and owner.id == "os":
                found.append(f"{line}: os.{name}")
            if name in ENVIRON_WRITES and _is_os_environ(owner):
                found.append(f"{line}: os.environ.{name}")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript) and _is_os_environ(target.value):
                found.append(f"{line}: writes os.environ[...]")
            if _is_os_environ(target):
                found.append(f"{line}: replaces os.environ")
    return sorted(found, key=lambda problem: int(problem.split(":")[0]))


def test_the_check_finds_each_kind_of_violation() -> None:
    bad = (
        "import os\nimport sqlalchemy as sa\nfrom sqlalchemy import text\n"
        "sa.text('SELECT 1')\nos.chdir('/tmp')\nos.environ['A'] = '1'\nos.environ.update(A='1')\n"
        "os.environ.setdefault('A', '1')\ndel os.environ['A']\nos.putenv('A', '1')\n"
    )
    found = layering_violations(bad)
    assert sorted(int(problem.split(":")[0]) for problem in found) == list(range(3, 11)), found
    # Reading the environment and a dict's setdefault are fine.
    assert layering_violations("import os\nenv = {**os.environ}\nenv.setdefault('A', '1')\n") == []


def test_no_cli_module_runs_sql_or_changes_the_process_environment_or_working_folder() -> None:
    modules = sorted(CLI.rglob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py", "demo.py", "dev.py", "report.py"}
    found = {
        str(path.relative_to(ROOT)): problems
        for path in modules
        if (problems := layering_violations(Path(path).read_text()))
    }
    assert found == {}
