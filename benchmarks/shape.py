"""The package's shape: lines per module, the longest functions, probes of objects
(``hasattr``, ``getattr`` with a default), ``isinstance`` on plan or counter kinds, and
the modules one ``annealmix inspect`` call passes through.

    python benchmarks/shape.py [ROOT]   # ROOT: a checkout (default: this one)

Run it on two checkouts (``git worktree add /tmp/before COMMIT``) to compare them; the
trace imports annealmix from ``ROOT/src``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import io
import re
import sys
from pathlib import Path

KINDS = r"TokenPlan|OnlinePlan|Bernoulli|Tokens|Carried|Nearest|EarliestDeadline"


def shape(package: Path) -> None:
    files = sorted(package.rglob("*.py"))
    total, functions, probes, kinds = 0, [], [], []
    print("## lines per module")
    for path in files:
        name = path.relative_to(package)
        n = len(path.read_text().splitlines())
        total += n
        print(f"{n:5d} {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                call = node.func.id
                if call == "hasattr" or (call == "getattr" and len(node.args) == 3):
                    probes.append(f"{name}:{node.lineno} {ast.unparse(node)}")
                if call == "isinstance" and re.search(KINDS, ast.unparse(node.args[1])):
                    kinds.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    print(f"{total:5d} total\n\n## ten longest functions")
    for n, name in sorted(functions, reverse=True)[:10]:
        print(f"{n:4d} {name}")
    print(f"\n## probes: {len(probes)}", *probes, sep="\n  ")
    print(f"\n## isinstance on plan or counter kinds: {len(kinds)}", *kinds, sep="\n  ")


def trace(argv: list[str]) -> None:
    """Modules a CLI call passes through (module bodies aside), and how often control
    comes back to one it left."""
    from annealmix import cli

    for depth, label in ((None, "each file"), (2, "top-level modules")):
        seq = []

        def profile(frame, event, arg, depth=depth, seq=seq):
            if event != "call" or frame.f_code.co_name == "<module>":
                return
            module = frame.f_globals.get("__name__", "")
            module = ".".join(module.split(".")[:depth]) if depth else module
            if module.startswith("annealmix") and (not seq or seq[-1] != module):
                seq.append(module)

        sys.setprofile(profile)
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(argv)
        sys.setprofile(None)
        visits = collections.Counter(seq)
        print(f"annealmix {' '.join(argv)} ({label}): {len(visits)} modules, {len(seq)} "
              f"entries, {len(seq) - len(visits)} returns to a module already visited")


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    sys.path.insert(0, str(root / "src"))
    shape(root / "src" / "annealmix")
    print()
    trace(["inspect", str(root / "examples" / "mix.toml"), "--step", "90000"])


if __name__ == "__main__":
    main()
