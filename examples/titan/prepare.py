"""Write the example's data and mixture config into a folder.

    python examples/titan/prepare.py OUT [--seq-len 256]

OUT/code.bin and OUT/prose.bin hold byte tokens (uint16) of two domains every
Python installation carries (the standard library's code, the reference manual's
prose), one document per file or topic, each ended by token 0; OUT/mix.toml packs
them into windows and anneals from code into prose over the middle of the run.
OUT/tokenizer/vocab.json is a byte vocabulary, for torchtitan's trainer, which
builds a tokenizer from ``--hf_assets_path`` (the tokens are bytes already).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from annealmix.demo.data import domain_bytes

MIX = """\
global_batch_size = {batch}
num_steps = {steps}
seed = 0
output = "dict"             # per-document positions, which torchtitan masks attention by
[sources.code]
weight = 0.9
path = "code.bin"
format = "nanogpt"
eos_id = 0
seq_len = {seq_len}
[sources.prose]
weight = 0.1
path = "prose.bin"
format = "nanogpt"
eos_id = 0
seq_len = {seq_len}
[[phases]]                  # code -> prose along a cosine, mid-run
start_step = {start}
end_step = {end}
weights = {{ prose = 0.8, code = 0.2 }}
schedule = "cosine"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--global-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for domain, split_at in (("code", b"\n\n\n"), ("prose", b"\n\n")):
        raw = domain_bytes(domain).tobytes().replace(b"\0", b" ")
        documents = [d for d in raw.split(split_at) if d.strip()]
        tokens = np.frombuffer(b"\0".join(documents) + b"\0", dtype=np.uint8)
        tokens.astype(np.uint16).tofile(args.out / f"{domain}.bin")
    s = args.steps
    (args.out / "mix.toml").write_text(
        MIX.format(
            batch=args.global_batch_size,
            steps=s,
            seq_len=args.seq_len,
            start=s // 4,
            end=3 * s // 4,
        )  # fmt: skip
    )
    (args.out / "tokenizer").mkdir(exist_ok=True)
    vocab = {f"<{i:02x}>": i for i in range(256)}  # one entry per byte
    (args.out / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    print(f"wrote {args.out}/code.bin, prose.bin, mix.toml and tokenizer/")


if __name__ == "__main__":
    main()
