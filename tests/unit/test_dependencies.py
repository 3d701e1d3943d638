"""Every third-party package that app/ imports is declared in pyproject.toml (a fresh install has it)."""

import ast
import importlib.metadata
import re
import sys
import tomllib

from app.paths import REPO_ROOT


def _imported_top_level() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"app", "__future__"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"]}


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level()):
        dists = {_normalise(d) for d in distributions.get(module, [module])}
        if not dists & _declared():
            missing[module] = sorted(dists)
    assert not missing, f"imported by app/ but not in pyproject.toml's dependencies: {missing}"


def test_the_scan_sees_what_app_imports():
    assert {"sqlalchemy", "psutil", "torch", "psycopg"} <= _imported_top_level()
