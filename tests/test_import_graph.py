"""diffeic's modules import each other without a cycle, counting imports inside functions (issue 16 item 2).

A function-level import hides a cycle from the interpreter (it runs later) but not from a reader: the two
modules still cannot be understood or changed one without the other.  decoder.py and fast.py had one.
"""
import ast
from pathlib import Path
from typing import Dict, Set

import diffeic

ROOT = Path(diffeic.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = ("diffeic", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """``{module: diffeic modules it imports}`` from every import statement, at any depth of the file."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}".rstrip(".")
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]):
    """One cycle as a list of modules (first == last), or None."""
    state: Dict[str, int] = {}            # 1: on the current path, 2: done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_of_diffeic_has_no_cycle():
    graph = import_graph()
    assert "diffeic.diffusion.fast" in graph["diffeic.diffusion.decoder"]     # the walk sees imports at all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_function_level_import(tmp_path):
    pkg = tmp_path / "diffeic"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from .b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import a\n")
    assert find_cycle(import_graph(pkg)) == ["diffeic.sub.a", "diffeic.sub.b", "diffeic.sub.a"]


#: The layers above the library: they may import everything below, nothing below imports them.
UPPER_LAYERS = ("diffeic.evaluation", "diffeic.training", "diffeic.cli", "diffeic.__main__")


def _is_upper(module: str) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in UPPER_LAYERS)


def layer_violations(graph: Dict[str, Set[str]]):
    """``(module, upper module)`` pairs where a family or core module imports evaluation, training or the CLI."""
    return sorted((m, t) for m, targets in graph.items() if not _is_upper(m) for t in targets if _is_upper(t))


def test_families_and_core_never_import_evaluation_training_or_the_cli():
    # issue 31: diffeic/hific/losses.py reached up into diffeic.evaluation.weights for the LPIPS backbone
    graph = import_graph()
    assert "diffeic.netweights" in graph["diffeic.hific.losses"]           # the walk sees the moved import
    assert {"diffeic.hific.codec", "diffeic.refine.codec", "diffeic.codec", "diffeic.checkpoint"} <= set(graph)
    assert layer_violations(graph) == []


def test_the_layer_rule_finds_a_function_level_import(tmp_path):
    pkg = tmp_path / "diffeic"
    for sub in ("hific", "evaluation"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "evaluation" / "weights.py").write_text("X = 1\n")
    (pkg / "hific" / "losses.py").write_text("def f():\n    from ..evaluation.weights import X\n")
    assert layer_violations(import_graph(pkg)) == [("diffeic.hific.losses", "diffeic.evaluation.weights")]
