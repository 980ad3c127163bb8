"""annealmix against HF datasets, torchdata, MosaicML streaming, lhotse and Megatron.

    pip install -c constraints.txt -e ".[bench]"
    python benchmarks/bench_peers.py [--samples 2000000] [--budget 20] [--out FILE.md]
    python benchmarks/bench_peers.py --sources 2 --samples 300000 --budget 3   # short

The same work for every system (see ``peers.py``): in-memory integer sources, 2 and
8 of them at fixed weights, then 2 along a cosine schedule (which only annealmix
and the post's loop can follow). ``--systems`` keeps the systems whose names
contain one of its comma-separated words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _machine import describe
from peers import SYSTEMS, report, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2_000_000, help="samples per system")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of serving, at most")
    parser.add_argument("--sources", default="2,8", help="source counts, comma-separated")
    parser.add_argument("--systems", help="only systems whose names contain one of these words")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    sources = [int(x) for x in args.sources.split(",")]
    wanted = [w.strip().lower() for w in args.systems.split(",")] if args.systems else []
    systems = [n for n in SYSTEMS if not wanted or any(w in n.lower() for w in wanted)]
    if not systems:
        parser.error(f"--systems {args.systems!r} matches none of: {', '.join(SYSTEMS)}")
    text = "\n".join(
        [
            describe(),
            versions(),
            f"{args.samples:,} samples asked of each system, at most {args.budget:g} s of "
            "serving; batches of 1024 for the mix error",
            "",
            report(sources, args.samples, args.budget, systems=systems),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
