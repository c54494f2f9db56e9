"""The rooms order (docs/architecture.md, the one place it is written): every import between sdviz's modules, at the
top of a file or inside a function, goes to a module of the same row or an earlier one, and no chain of imports
comes back to where it started. Read from the source with `ast`, so a function-level import cannot hide a cycle."""

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sdviz"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def rooms() -> list[list[str]]:
    """The rows of the rooms table, lowest first: module names relative to sdviz (`sdviz` is the package itself)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("<!-- rooms -->")[1].split("<!-- /rooms -->")[0]
    rows = [line.split("|")[2] for line in table.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    return [re.findall(r"`([\w.*]+)`", row) for row in rows]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "sdviz"


def imports(path: Path) -> set[str]:
    """The sdviz modules `path` imports anywhere in its code (module names as `module_name` gives them)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = [p for p in package.split(".") if p and p != "sdviz"]
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # `from . import x`: x is a module when a file says so, else a name of the package
                found |= {n if _is_module(n := f"{target}.{a.name}".strip(".")) else target or "sdviz" for a in node.names}
            else:
                found.add(target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdviz"):
            found.add(node.module.removeprefix("sdviz.") if node.module != "sdviz" else "sdviz")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("sdviz.") if a.name != "sdviz" else "sdviz" for a in node.names
                      if a.name.split(".")[0] == "sdviz"}
    return found - {here}


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def row_of(name: str, table: list[list[str]]) -> int | None:
    return next((i for i, row in enumerate(table) for pattern in row if fnmatch(name, pattern) or name == pattern), None)


def test_every_module_has_a_room_and_imports_only_its_own_row_or_earlier_ones():
    table, edges = rooms(), graph()
    assert len(table) >= 10 and all(table), "docs/architecture.md's rooms table between <!-- rooms --> markers"
    unplaced = sorted(m for m in edges if row_of(m, table) is None)
    assert not unplaced, f"add these modules to the rooms table in docs/architecture.md: {unplaced}"
    upward = sorted(f"{m} (row {row_of(m, table) + 1}) imports {d} (row {row_of(d, table) + 1})"
                    for m, deps in edges.items() for d in deps if row_of(d, table) > row_of(m, table))
    assert not upward, "imports against the rooms order:\n" + "\n".join(upward)


def test_no_import_cycle_anywhere_in_the_package():
    edges = graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for dep in sorted(edges.get(node, ())):
            visit(dep, path + [node])
        done.add(node)

    for module in sorted(edges):
        visit(module, [])


def test_the_import_reader_sees_function_level_and_relative_imports():
    assert {"io", "probes"} <= imports(PACKAGE / "analysis.py")  # `stage` at the top, probes inside `analyse`
    assert {"sdviz", "report", "analysis", "maps", "probes"} <= imports(PACKAGE / "build.py")  # sdviz: `__version__`
    assert {"results", "ui.state"} <= imports(PACKAGE / "ui" / "report.py")  # `from ..results`, `from . import state`
