"""annealmix against HF datasets, torchdata, MosaicML streaming, lhotse and Megatron.

    pip install -c constraints.txt -e ".[bench]"
    python benchmarks/bench_peers.py [--samples 2000000] [--budget 20] [--out FILE.md]

The same work for every system (see ``annealmix.bench``): in-memory integer
sources, 2 and 8 of them at fixed weights, then 2 along a cosine schedule (which
only annealmix and the post's loop can follow). ``annealmix bench`` is the short
version of this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _machine import describe

from annealmix.bench import report, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2_000_000, help="samples per system")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of serving, at most")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    text = "\n".join(
        [
            describe(),
            versions(),
            f"{args.samples:,} samples asked of each system, at most {args.budget:g} s of "
            "serving; batches of 1024 for the mix error",
            "",
            report([2, 8], args.samples, args.budget),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
