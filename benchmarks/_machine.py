"""One line that says where a benchmark ran: hardware, versions, date."""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np

import annealmix


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"annealmix {annealmix.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()} {cpu_model()} "
        f"({cores} cores), {datetime.date.today()}"
    )


def report(lines: list[str], out: str | None) -> None:
    """Print a benchmark's markdown, and write it to ``out`` when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
