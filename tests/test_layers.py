"""The shape of the package: data flows one way through DESIGN.md's layers, no import
circle, no call of a method only a later layer defines, modules of a readable size,
and almost no probing of objects with ``hasattr``/``getattr``."""

import ast
from collections import defaultdict
from pathlib import Path

import numpy as np

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "annealmix"

# DESIGN.md's layers, first to last; a module may import its own layer and earlier ones.
# The within-source order (a draw -> a sample index) sits below the plan: it needs no
# plan, and a plan in tokens counts the lengths of the samples its draws map to.
LAYERS = [
    ("helpers", {"_validate", "_hash", "_fmath", "_progress", "_compiled"}),
    ("schedules", {"schedules", "post"}),  # post: the post's own functions over schedules
    ("mixture", {"mixture", "weights", "controllers", "ramp"}),
    ("order", {"order"}),
    ("plan", {"_counting", "batch", "weightlog", "plan", "tokens", "online"}),
    (
        "sources and the stream",
        {"files", "sources", "documents", "packing", "blends", "shard", "state", "stream",
         "reading", "metrics", "hf", "sample_dict", "windows", "ratios"},  # fmt: skip
    ),
    ("torch", {"torch"}),
    ("config, cli, demo", {"config", "lists", "opened", "plotting", "cli", "__main__", "demo",
                           "titan", "olmo"}),
]
LAYER_OF = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
MODULES = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
MAX_LINES = 500
# hasattr / getattr with a default: where they stay, and why. Sources are probed in
# their home only (sources.py); nothing probes a plan.
PROBES = {
    "sources.py": 4,  # is_stream (len and []), a Hugging Face stream's iter and skip
    "post.py": 2,  # the post's sampler takes any sequences X and Y
    "_compiled.py": 2,  # the platform's CPU affinity; numba's py_func
    "_validate.py": 1,  # a number is anything with __float__
    "demo/run.py": 1,  # torch builds without the mps backend
}


def _module(path: Path) -> str:
    """The top-level annealmix module a file belongs to (a package counts as one)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _dotted(path: Path) -> str:
    """The file's module path inside the package (``torch.data``, ``_counting``)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(path: Path) -> set[str]:
    """Dotted annealmix modules a file imports anywhere in it (lazy imports count)."""
    here = _dotted(path).split(".") if _dotted(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            stem = [*base, *(node.module.split(".") if node.module else [])]
            if node.module:
                out.add(".".join(stem))
            for alias in node.names:
                out.add(".".join([*stem, alias.name]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("annealmix."):
            out.add(node.module.removeprefix("annealmix."))
    return out


FILES = sorted(PACKAGE.rglob("*.py"))
DOTTED = {_dotted(p): p for p in FILES}


def _imports(path: Path) -> set[str]:
    """Top-level annealmix modules a file imports."""
    return {t.split(".")[0] for t in _targets(path) if t.split(".")[0] in MODULES}


def _upward(layers) -> list[str]:
    """Every import of a later layer under ``layers``."""
    layer_of = {name: i for i, (_, names) in enumerate(layers) for name in names}
    out = []
    for path in FILES:
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the package's front door re-exports every layer
        mine = layer_of[_module(path)]
        for name in sorted(_imports(path) - {_module(path)}):
            if layer_of[name] > mine:
                out.append(
                    f"{path.relative_to(PACKAGE)} ({layers[mine][0]}) imports {name} "
                    f"({layers[layer_of[name]][0]}), a later layer"
                )
    return out


def test_every_module_has_a_layer():
    modules = {_module(p) for p in FILES if p != PACKAGE / "__init__.py"}
    assert modules <= set(LAYER_OF), f"add {sorted(modules - set(LAYER_OF))} to LAYERS"


def test_no_module_imports_a_later_layer():
    assert _upward(LAYERS) == []


def test_the_checker_sees_an_upward_import():
    swapped = list(LAYERS)
    swapped[3], swapped[4] = LAYERS[4], LAYERS[3]  # plan before order: plan imports order
    assert any(v.startswith("plan.py (plan) imports order") for v in _upward(swapped))
    assert {"plan", "shard", "order", "_counting"} <= _imports(PACKAGE / "stream.py")
    assert {"stream", "plan", "shard"} <= _imports(PACKAGE / "torch" / "data.py")


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name imported from a package
    counts as its submodule where one exists)."""
    out = {}
    for name, path in DOTTED.items():
        edges = set()
        for target in _targets(path):
            while target and target not in DOTTED:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        out[name] = edges
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = _graph()
    graph.pop("", None)  # the package's front door imports everything, and nothing it
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]  # it finds one


# Method names of builtins and numpy arrays: a call of one (``.take``, ``.append``)
# may be theirs, so it says nothing about which of our classes it reaches.
COMMON = {name for t in (list, dict, set, str, tuple, np.ndarray) for name in dir(t)}
# Names other packages' contracts give: ``build`` is megatron-core's dataset builder's
# and OLMo-core's config method (``annealmix.olmo`` defines one to meet it).
COMMON |= {"build"}


def _methods() -> dict[str, set[int]]:
    """Method name -> the layers whose classes define it (``COMMON`` names aside)."""
    out = defaultdict(set)
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if not isinstance(item, ast.FunctionDef) or item.name in COMMON:
                        continue
                    if not item.name.startswith("__"):
                        out[item.name].add(LAYER_OF.get(_module(path), -1))
    return out


def _module_names(tree: ast.AST) -> set[str]:
    """Names a file binds to modules (``import numpy as np``, ``from . import x``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level and not node.module:
            out |= {a.asname or a.name for a in node.names}
    return out


def _duck_edges(methods: dict[str, set[int]]) -> list[str]:
    """Calls ``x.name(...)`` (``x`` not a module) in a module of a layer lower than
    every class that defines ``name``: an edge the import checker cannot see."""
    out = []
    for path in FILES:
        if path == PACKAGE / "__init__.py":
            continue
        mine = LAYER_OF[_module(path)]
        tree = ast.parse(path.read_text())
        modules = _module_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id in modules:
                    continue
                layers = methods.get(node.func.attr)
                if layers and min(layers) > mine:
                    out.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls "
                               f".{node.func.attr}(), defined only in a later layer")  # fmt: skip
    return out


def test_no_module_calls_a_method_only_a_later_layer_defines():
    assert _duck_edges(_methods()) == []
    planted = _methods()
    planted["weight_log"] = {LAYER_OF["torch"]}  # as if only the torch layer defined it
    assert any("stream.py" in e and ".weight_log()" in e for e in _duck_edges(planted))


def test_modules_stay_readable_in_size():
    long = {str(p.relative_to(PACKAGE)): n for p in FILES
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"


def test_objects_are_not_probed_outside_a_few_known_places():
    found = defaultdict(int)
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3)
            ):
                found[str(path.relative_to(PACKAGE))] += 1
    assert dict(found) == PROBES
