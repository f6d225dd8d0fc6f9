"""Each module's ``__all__`` names exactly its public surface (STYLE.md: typed public surface)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "flex"
ALL_MODULES = sorted(p for p in PKG.rglob("*.py") if "migrations" not in p.parts)


def _registered(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function registered by a method-call decorator (``@router.get(...)``, ``@app.command()``) is
    reached through what registered it, not imported by name."""
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) for d in node.decorator_list)


def _public_definitions(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _registered(node):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return {n for n in names if not n.startswith("_")}


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id == "__all__" and node.value is not None:
                value = ast.literal_eval(node.value)
                return list(value)
    return None


MODULES = [p for p in ALL_MODULES if _declared_all(ast.parse(p.read_text())) is not None]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG.parent)))
def test_all_lists_what_the_module_defines(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    declared = _declared_all(tree)
    assert declared is not None
    assert len(declared) == len(set(declared)), "duplicates in __all__"
    defined = _public_definitions(tree)
    top_level_names = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body):
        # names loaded on first use (PEP 562): the module's __getattr__ serves what `if TYPE_CHECKING:` imports
        imports += [i for node in tree.body if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                    and node.test.id == "TYPE_CHECKING" for i in node.body if isinstance(i, ast.ImportFrom)]
    imported = {(a.asname or a.name).split(".")[0] for node in imports for a in node.names}
    missing = defined - set(declared)
    unknown = set(declared) - defined - top_level_names - imported
    assert not missing, f"public but not in __all__: {sorted(missing)}"
    assert not unknown, f"in __all__ but not defined: {sorted(unknown)}"
