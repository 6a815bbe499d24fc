"""No import circles among the core's modules (issue 9): the graph of `mmgrpo/**/*.py` imports, read with
ast, is acyclic at module level, and stays acyclic with the imports inside functions counted too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "mmgrpo"


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(CORE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: dict, module_level: bool) -> set[str]:
    """mmgrpo modules that `name` imports (`from . import x` counts as the module x when x is one)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in found if m in known and m != name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v) and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m) and (found := visit(m)):
            return found
    return None


def graph(module_level: bool) -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known, module_level) for m, p in known.items()}


def test_the_checker_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    g = graph(True)
    assert "mmgrpo.schema" in g["mmgrpo.config"] and "mmgrpo.components" in g["mmgrpo.config"]


def test_core_module_level_imports_are_acyclic():
    assert cycle(graph(True)) is None, " -> ".join(cycle(graph(True)))


def test_core_imports_are_acyclic_counting_late_imports():
    # late imports inside functions hide circles from Python, not from readers: none either
    found = cycle(graph(False))
    assert found is None, " -> ".join(found)
