"""Two Hugging Face datasets mixed along an anneal, as one ``datasets.Dataset``.

    python examples/hf_mix.py

The data is text every Python installation carries: the standard library's code
and the reference manual's prose, one row per file or topic. The mix moves from
90% code to 80% prose over steps 100 to 300; the printed shares follow it.
"""

import datasets
import numpy as np

from annealmix import Mixture, Phase, Plan
from annealmix.demo.data import domain_bytes
from annealmix.hf import mix_datasets


def rows(domain: str, split_at: bytes) -> datasets.Dataset:
    text = domain_bytes(domain).tobytes().decode("utf-8", errors="replace")
    return datasets.Dataset.from_dict({"text": [t for t in text.split(split_at) if t.strip()]})


code, prose = rows("code", "\n\n\n"), rows("prose", "\n\n")
mix = Mixture(
    weights={"code": 0.9, "prose": 0.1},
    phases=[Phase(start_step=100, end_step=300, weights={"code": 0.2, "prose": 0.8})],
)
plan = Plan(mix, global_batch_size=32, sizes={"code": len(code), "prose": len(prose)})
train = mix_datasets({"code": code, "prose": prose}, plan, num_steps=400)

print(f"{len(train):,} rows, columns {train.column_names}")
source = np.array(train["source"]).reshape(400, 32)
for a in range(0, 400, 50):
    share = (source[a : a + 50] == 1).mean()
    scheduled = mix.weights_at(np.arange(a, a + 50))[:, 1].mean()
    print(f"steps {a:3d}-{a + 49:3d}: prose {share:5.1%} (scheduled {scheduled:5.1%})")
print("first row:", train[0]["text"][:60].replace("\n", " "), "...")

# interleave_datasets draws every row at random: the 90/10 mix of the first 100 steps,
# as it gives it, wanders from batch to batch (the plan's batches hold 3 or 4 of 32).
tagged = [d.add_column("source", [k] * len(d)) for k, d in enumerate((code, prose))]
drawn = datasets.interleave_datasets(tagged, probabilities=[0.9, 0.1], seed=42,
                                     stopping_strategy="all_exhausted")  # fmt: skip
shares = np.array(drawn.select(range(32 * 400))["source"]).reshape(400, 32).mean(axis=1)
ours = (source[:100] == 1).mean(axis=1)
print(
    f"a 10% source's share of 32-row batches: interleave_datasets {shares.std():.1%} std "
    f"({shares.min():.0%} to {shares.max():.0%}); mix_datasets {ours.std():.1%} std "
    f"({ours.min():.1%} to {ours.max():.1%})"
)
