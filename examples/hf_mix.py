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
