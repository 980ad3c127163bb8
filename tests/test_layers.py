"""The layer order of the design: data flows one way, and no module imports upward."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "annealmix"

# DESIGN.md's layers, first to last; a module may import its own layer and earlier ones.
# The within-source order (a draw -> a sample index) sits below the plan: it needs no
# plan, and a plan in tokens counts the lengths of the samples its draws map to.
LAYERS = [
    ("helpers", {"_validate", "_hash", "_fmath", "_progress"}),
    ("schedules", {"schedules", "post"}),  # post: the post's own functions over schedules
    ("mixture", {"mixture", "weights", "controllers"}),
    ("order", {"order"}),
    ("plan", {"_counting", "batch", "weightlog", "plan", "tokens", "online"}),
    (
        "sources and the stream",
        {"sources", "documents", "packing", "blends", "shard", "stream", "metrics", "hf"},
    ),
    ("torch", {"torch"}),
    ("config, cli, demo", {"config", "plotting", "cli", "__main__", "demo", "titan"}),
]
LAYER_OF = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
MODULES = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}


def _module(path: Path) -> str:
    """The top-level annealmix module a file belongs to (a package counts as one)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """annealmix modules a file imports anywhere in it (lazy imports count)."""
    out, depth = set(), len(path.relative_to(PACKAGE).parts) - 1
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level == depth + 1:  # from . / from .. at the package's top level
                names = [node.module.split(".")[0]] if node.module else []
                names += [] if node.module else [a.name for a in node.names]
                out |= {n for n in names if n in MODULES}  # not __version__ and the like
            elif node.level <= depth:  # within its own subpackage
                continue
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("annealmix."):
            out.add(node.module.split(".")[1])
    return out


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _upward(layers) -> list[str]:
    """Every import of a later layer under ``layers``."""
    layer_of = {name: i for i, (_, names) in enumerate(layers) for name in names}
    out = []
    for path in FILES:
        mine = layer_of[_module(path)]
        for name in sorted(_imports(path) - {_module(path)}):
            if layer_of[name] > mine:
                out.append(
                    f"{path.relative_to(PACKAGE)} ({layers[mine][0]}) imports {name} "
                    f"({layers[layer_of[name]][0]}), a later layer"
                )
    return out


def test_every_module_has_a_layer():
    modules = {_module(p) for p in FILES}
    assert modules <= set(LAYER_OF), f"add {sorted(modules - set(LAYER_OF))} to LAYERS"


def test_no_module_imports_a_later_layer():
    assert _upward(LAYERS) == []


def test_the_checker_sees_an_upward_import():
    swapped = list(LAYERS)
    swapped[3], swapped[4] = LAYERS[4], LAYERS[3]  # plan before order: plan imports order
    assert any(v.startswith("plan.py (plan) imports order") for v in _upward(swapped))
    assert {"plan", "shard", "order", "_counting"} <= _imports(PACKAGE / "stream.py")
    assert {"stream", "plan", "shard"} <= _imports(PACKAGE / "torch" / "data.py")
