"""Time ``annealmix inspect --step 1000000`` on a config with 8 sources (goal: < 1 s).

    python benchmarks/bench_inspect.py

Two configs, 1.2 million steps of 1024: the usual shape (constant, then a cosine
anneal over the last 20%) and the worst case (the anneal spans every step). Each
is timed as the whole command, a fresh process (Python start-up included), best of 3.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe

NAMES = [f"s{i}" for i in range(8)]


def config(start: int) -> str:
    lines = ["global_batch_size = 1024", "num_steps = 1_200_000", ""]
    for i, name in enumerate(NAMES):
        lines += [f"[sources.{name}]", f"weight = {1 + i}", f"size = {10**8 + i}", ""]
    end = ", ".join(f"{n} = {8 - i}" for i, n in enumerate(NAMES))
    lines += ["[[phases]]", f"start_step = {start}", "end_step = 1_199_999"]
    lines += ['schedule = "cosine"', f"weights = {{ {end} }}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(describe())
    print("| config | inspect --step 1000000 (whole command) |\n|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, start in (("anneal over the last 20%", 960_000), ("anneal over all", 0)):
            path = Path(tmp) / "eight.toml"
            path.write_text(config(start))
            cmd = [sys.executable, "-m", "annealmix", "inspect", str(path), "--step", "1000000"]
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                best = min(best, time.perf_counter() - t0)
            print(f"| 8 sources, {label} | {best:.2f} s |")


if __name__ == "__main__":
    main()
