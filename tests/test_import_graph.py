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
    assert {"diffeic.codecs.hific", "diffeic.codecs.refine", "diffeic.codecs.diffeic", "diffeic.codecs.folder"} <= set(graph)
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


# --------------------------------------------------------------- compressai's import warning (issue 32 item 4)
def _imports_compressai(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "compressai" for a in node.names)) or \
        (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "compressai")


def _imports_guard(node: ast.stmt) -> bool:
    """``from . import _compressai``, ``from .._compressai import compressai`` and the like."""
    return isinstance(node, ast.ImportFrom) and ("_compressai" in (node.module or "").split(".")
                                                 or any(a.name == "_compressai" for a in node.names))


def unguarded_compressai_imports(root: Path = ROOT):
    """``file:line`` of every ``import compressai…`` not preceded, in the same block, by an import of
    ``diffeic._compressai`` (the one place that filters compressai's import-time warning)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "_compressai.py":
            continue
        for scope in ast.walk(ast.parse(path.read_text(), str(path))):
            body = getattr(scope, "body", None)
            guarded = False
            for stmt in body if isinstance(body, list) else []:
                guarded = guarded or _imports_guard(stmt)
                if _imports_compressai(stmt) and not guarded:
                    found.append(f"{path.relative_to(root.parent)}:{stmt.lineno}")
    return found


def test_every_compressai_import_goes_through_the_filtered_one(tmp_path):
    assert unguarded_compressai_imports() == []
    # The checker finds one, at module level and inside a function, and accepts the guarded form.
    pkg = tmp_path / "diffeic"
    pkg.mkdir()
    (pkg / "a.py").write_text("import torch\nfrom compressai.ans import RansDecoder\n")
    (pkg / "b.py").write_text("def f():\n    import compressai\n")
    (pkg / "c.py").write_text("from . import _compressai  # noqa\nfrom compressai.ans import RansDecoder\n")
    assert unguarded_compressai_imports(pkg) == ["diffeic/a.py:2", "diffeic/b.py:2"]


def test_importing_the_codecs_prints_no_torch_jit_script_warning():
    """``import diffeic`` and loading every codec family, with all warnings shown (``-W default``), print
    nothing about ``torch.jit.script`` (compressai's torch_geometric import), but the filter is not global:
    the same warning raised afterwards is still shown."""
    import subprocess
    import sys

    code = ("import diffeic, warnings; diffeic.DiffEICCodec, diffeic.HiFiCCodec, diffeic.RefineCodec; "
            "import compressai, torch_geometric; "
            "warnings.warn('`torch.jit.script` is deprecated (raised by the test)', FutureWarning)")
    run = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                         timeout=240, cwd=ROOT.parent)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "torch.jit.script" in line]
    assert lines == [line for line in lines if "raised by the test" in line] and len(lines) == 1, run.stderr
