"""diffeic's architecture rules, read from the source (imports inside functions count):

* modules import each other without a cycle (issue 16 item 2): a function-level import hides a cycle from the
  interpreter (it runs later) but not from a reader — decoder.py and fast.py had one;
* core and family modules never import evaluation, training or the CLI;
* units (top-level packages and root modules) sit on import levels, in declared tiers, and no import runs
  upward (``pytest tests/test_import_graph.py -s`` prints the levels table);
* no module uses another module's private names;
* every compressai import goes through ``diffeic._compressai``.
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

import diffeic

ROOT = Path(diffeic.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = ("diffeic", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> Dict[str, Path]:
    return {module_name(p, root): p for p in root.rglob("*.py")}


def _imported_from(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a ``from … import`` statement of module ``name`` (file ``path``) reads from."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}".rstrip(".")
    return base


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """``{module: diffeic modules it imports}`` from every import statement, at any depth of the file."""
    files = _modules(root)
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _imported_from(node, name, path)
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
    # diffeic/hific/losses.py reached up into diffeic.evaluation.weights for the LPIPS backbone
    graph = import_graph()
    assert "diffeic.netweights" in graph["diffeic.training.hific"]         # the walk sees the moved import
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


# --------------------------------------------------------------- import levels: no arrow runs upward
#: The library's tiers, lowest first: a unit (a top-level package, or a module at the package root) may import
#: units of its own tier or below, never above.  A new unit must be placed here (the test says so).  The last tier
#: holds the deprecated re-exports of old import paths, which nothing in the library may import.
TIERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("foundation", ("diffeic", "diffeic._compressai", "diffeic.sizes", "diffeic.bitstream", "diffeic.config",
                    "diffeic.decode_cost", "diffeic.io", "diffeic.samples", "diffeic.netweights", "diffeic.hub",
                    "diffeic.pretrained", "diffeic.bilevel", "diffeic.target_size", "diffeic.util",
                    "diffeic.weight_packing")),
    ("entropy coding", ("diffeic.entropy",)),
    ("networks", ("diffeic.lfgcm", "diffeic.diffusion")),
    ("codecs and families", ("diffeic.checkpoint", "diffeic.image_codec", "diffeic.codec", "diffeic.codecs",
                             "diffeic.hific", "diffeic.refine", "diffeic.semantic", "diffeic.convert")),
    ("evaluation and training", ("diffeic.evaluation", "diffeic.training")),
    ("command line", ("diffeic.cli", "diffeic.__main__")),
    ("deprecated re-exports", ()),
)
DEPRECATED = " (deprecated)"

#: Packages whose modules are units of their own: ``diffeic.codecs`` holds the codec base, the registry and one
#: plug-in per family, which sit on different levels by design (the base below the families, the registry above).
SPLIT_PACKAGES = ("diffeic.codecs",)


def deprecated_reexports(root: Path = ROOT) -> Set[str]:
    """Modules kept only for an old import path: not a package's ``__init__``, and nothing at the top level but a
    docstring, imports, ``__all__`` and a ``warnings.warn`` call."""
    def allowed(stmt: ast.stmt) -> bool:
        return (isinstance(stmt, (ast.Import, ast.ImportFrom))
                or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
                or (isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["__all__"])
                or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                    and ast.unparse(stmt.value.func) == "warnings.warn"))

    found = set()
    for name, path in _modules(root).items():
        body = ast.parse(path.read_text(), str(path)).body
        if path.name != "__init__.py" and all(map(allowed, body)) and any(
                isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) for st in body):
            found.add(name)
    return found


def unit_of(module: str, packages: Set[str] = frozenset(), deprecated: Set[str] = frozenset()) -> str:
    """``diffeic.lfgcm.entropy`` -> ``diffeic.lfgcm``.  Units of their own: a root module, a split package's module,
    a deprecated re-export, and a package's ``__init__`` in ``packages`` (a facade that imports from outside
    its package, e.g. a family's codec on first use)."""
    parts = module.split(".")
    if module in deprecated:
        return module + DEPRECATED
    if module in packages and len(parts) == 2 and module not in SPLIT_PACKAGES:
        return module + ".__init__"
    return ".".join(parts[:3] if ".".join(parts[:2]) in SPLIT_PACKAGES else parts[:2])


def tier_of(unit: str, tiers=TIERS) -> Optional[int]:
    """The index of the tier that holds ``unit`` (or the package it is part of)."""
    if unit.endswith(DEPRECATED):
        return len(tiers) - 1
    package = unit[:-len(".__init__")] if unit.endswith(".__init__") else unit
    package = package.rpartition(".")[0] if package.rpartition(".")[0] in SPLIT_PACKAGES else package
    return next((i for i, (_, members) in enumerate(tiers) if package in members), None)


def unit_graph(graph: Dict[str, Set[str]], deprecated: Set[str] = frozenset()) -> Dict[str, Set[str]]:
    """The import graph between units (imports inside a unit dropped).  A package's ``__init__`` that imports
    only its own package is part of the package's unit."""
    packages = {m.rpartition(".")[0] for m in graph}
    own = {p for p in packages if graph.get(p) is not None and all(t.startswith(p + ".") for t in graph[p])}
    units: Dict[str, Set[str]] = {}
    for module, targets in graph.items():
        unit = unit_of(module, packages - own, deprecated)
        units.setdefault(unit, set()).update(
            t for t in (unit_of(t, packages - own, deprecated) for t in targets) if t != unit)
    return units


def import_levels(units: Dict[str, Set[str]]) -> Dict[str, int]:
    """Each unit's level: the longest import path from it down to a unit that imports none (level 0).
    Raises ``ValueError`` naming a cycle (then some arrow runs upward and levels do not exist)."""
    cycle = find_cycle(units)
    if cycle:
        raise ValueError("units import each other: " + " -> ".join(cycle))
    levels: Dict[str, int] = {}

    def level(unit: str) -> int:
        if unit not in levels:
            levels[unit] = 1 + max((level(t) for t in units.get(unit, ())), default=-1)
        return levels[unit]

    for unit in units:
        level(unit)
    return levels


def upward_imports(units: Dict[str, Set[str]], tiers=TIERS) -> List[str]:
    """``unit -> target (tier -> higher tier)`` for every import into a higher tier; ``unit: no tier`` for a unit
    the tiers do not place."""
    tier = {unit: tier_of(unit, tiers) for unit in set(units).union(*units.values())}
    found = [f"{unit}: no tier (place it in TIERS)" for unit in sorted(units) if tier[unit] is None]
    found += [f"{unit} -> {t} ({tiers[tier[unit]][0]} -> {tiers[tier[t]][0]})"
              for unit in sorted(units) for t in sorted(units[unit])
              if tier[unit] is not None and tier[t] is not None and tier[t] > tier[unit]]
    return found


def levels_table(units: Dict[str, Set[str]], tiers=TIERS) -> str:
    """One line per unit (but those that import and are imported by none), highest level first: level, tier, unit
    and the units it imports."""
    levels = import_levels(units)
    tier = {u: "?" if tier_of(u, tiers) is None else tiers[tier_of(u, tiers)][0] for u in units}
    used = set().union(*units.values())
    rows = sorted((u for u in units if units[u] or u in used), key=lambda u: (-levels[u], u))
    width = max(map(len, rows)) + 2
    return "\n".join(f"{levels[u]:>5}  {tier[u]:<25}{u:<{width}}{', '.join(sorted(units[u])) or '-'}" for u in rows)


def test_import_levels_and_no_upward_import():
    assert "diffeic.hyperprior" in deprecated_reexports() and "diffeic.lfgcm" not in deprecated_reexports()
    units = unit_graph(import_graph(), deprecated_reexports())
    levels = import_levels(units)                  # raises on units that import each other
    assert upward_imports(units) == []
    assert all(levels[u] > levels[t] for u in units for t in units[u])     # every arrow runs down a level
    assert levels["diffeic.cli"] > levels["diffeic.evaluation"] > levels["diffeic.entropy"]
    print(f"\nimport levels ({len(units)} units, {max(levels.values()) + 1} levels):\n"
          f"level  tier                     unit, imports\n{levels_table(units)}")


def test_the_level_rule_finds_an_upward_import_and_a_cycle():
    units = {"diffeic.entropy": {"diffeic.sizes"}, "diffeic.sizes": set(), "diffeic.lfgcm": {"diffeic.entropy"}}
    assert import_levels(units) == {"diffeic.sizes": 0, "diffeic.entropy": 1, "diffeic.lfgcm": 2}
    assert upward_imports(units) == []
    units["diffeic.entropy"].add("diffeic.lfgcm")                       # the entropy layer reaches into a model
    assert upward_imports(units) == ["diffeic.entropy -> diffeic.lfgcm (entropy coding -> networks)"]
    with pytest.raises(ValueError, match="diffeic.entropy -> diffeic.lfgcm -> diffeic.entropy"):
        import_levels(units)
    assert upward_imports({"diffeic.newfamily": set()}) == ["diffeic.newfamily: no tier (place it in TIERS)"]
    assert unit_graph({"diffeic.hific.losses": {"diffeic.netweights", "diffeic.hific.model"}}) == \
        {"diffeic.hific": {"diffeic.netweights"}}
    # The codec package's modules are units of their own (a family may use the base, the registry the family), and
    # a package's __init__ is a facade that may re-export from above its package.
    split = {"diffeic.codecs.registry": {"diffeic.codecs.hific"}, "diffeic.codecs.hific": {"diffeic.hific.model"},
             "diffeic.hific.model": {"diffeic.codecs.base"}, "diffeic.codecs.base": set(),
             "diffeic.hific": {"diffeic.codecs.hific"}, "diffeic.codecs": set()}
    units = unit_graph(split)
    assert import_levels(units)["diffeic.codecs.registry"] == 3 and upward_imports(units) == []
    assert units["diffeic.hific.__init__"] == {"diffeic.codecs.hific"}
    # A deprecated re-export is a unit of the top tier: nothing in the library may import it.
    units = unit_graph({"diffeic.hub": {"diffeic.codecs.registry"}, "diffeic.codecs.registry": set(),
                        "diffeic.diffusion.sd_source": {"diffeic.hub"}}, deprecated={"diffeic.hub"})
    assert upward_imports(units) == [
        "diffeic.diffusion -> diffeic.hub (deprecated) (networks -> deprecated re-exports)"]


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


# --------------------------------------------------------------- no private name used across modules
def _private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def private_name_uses(root: Path = ROOT) -> List[str]:
    """``module:line module.name`` for every private name (``_x``, not dunder) a diffeic module takes from another
    diffeic module: ``from m import _x`` or ``m._x`` on an imported module.  A private *module* (``_compressai``)
    may be imported; a package's ``__init__`` may re-export its own submodules' names."""
    files = _modules(root)
    found = []
    for name, path in sorted(files.items()):
        tree = ast.parse(path.read_text(), str(path))
        modules: Dict[str, str] = {}                 # local name -> diffeic module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update({(a.asname or a.name): a.name for a in node.names if a.name in files and a.asname})
            elif isinstance(node, ast.ImportFrom):
                base = _imported_from(node, name, path)
                for a in node.names:
                    if f"{base}.{a.name}" in files:
                        modules[a.asname or a.name] = f"{base}.{a.name}"
                    elif (base in files and base != name and _private(a.name)
                          and not (path.name == "__init__.py" and base.startswith(name + "."))):
                        found.append(f"{name}:{node.lineno} {base}.{a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and modules.get(node.value.id, name) != name):
                found.append(f"{name}:{node.lineno} {modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_name_uses() == []


def test_the_private_name_rule_finds_each_form(tmp_path):
    pkg = tmp_path / "diffeic"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_compressai.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import _helper\n")            # a re-export: allowed
    (pkg / "sub" / "a.py").write_text("def _helper():\n    pass\n\n\ndef public():\n    _helper()\n")
    (pkg / "sub" / "b.py").write_text("from .. import _compressai\nfrom .a import public, _helper\n")
    (pkg / "c.py").write_text("from .sub import a\nimport diffeic.sub.a as aa\n\n\ndef f():\n"
                              "    from .sub.a import _helper as h\n    return a._helper, aa._helper, a.public\n")
    assert private_name_uses(pkg) == ["diffeic.c:6 diffeic.sub.a._helper", "diffeic.c:7 diffeic.sub.a._helper",
                                      "diffeic.c:7 diffeic.sub.a._helper", "diffeic.sub.b:2 diffeic.sub.a._helper"]
