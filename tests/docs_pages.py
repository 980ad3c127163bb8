"""What the documentation's code fences assume: each page's world, built small.

A page's fences run in order in one namespace, in a fresh working folder, as a
reader would paste them. Where a fence picks up names the page's prose defines
(``sources``, ``model``, ``plan``: the reader's own), its page's world gives them,
made of generated data. A training loop written for 100,000 steps runs until the
world's ``log``, ``per_sample_loss`` or model has seen a few steps, which raise
``EnoughSteps`` (the fence ran its loop: the runner goes on with the next fence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEQ = 16


class EnoughSteps(Exception):
    """Raised by a world's loop hook once a fence's loop has run a few steps."""


def _after(calls: int):
    """A counter that raises ``EnoughSteps`` on call ``calls + 1``."""
    seen = [0]

    def tick() -> None:
        seen[0] += 1
        if seen[0] > calls:
            raise EnoughSteps

    return tick


def _windows(seed: int, low: int, n: int = 400):
    from annealmix import TokenWindows

    tokens = np.random.default_rng(seed).integers(low, low + 30, n * SEQ + 1)
    return TokenWindows(tokens.astype(np.int64), SEQ)


def _tiny_lm():
    import torch

    class TinyLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.out = torch.nn.Embedding(64, 16), torch.nn.Linear(16, 64)

        def forward(self, x):
            return self.out(self.embed(x))

    torch.manual_seed(0)
    return TinyLM()


def pytorch(folder: Path) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the fence's name for it

    from annealmix import Mixture, Phase, Plan

    sources = {"web": _windows(0, 1), "code": _windows(1, 33)}
    mix = Mixture(weights={"web": 0.9, "code": 0.1},
                  phases=[Phase(start_step=2, end_step=5, weights={"web": 0.5, "code": 0.5})])
    plan = Plan(mix, global_batch_size=8, sizes={n: len(s) for n, s in sources.items()})
    model = _tiny_lm()
    tick, saved = _after(3), []

    def log(metrics: dict) -> None:
        assert "loss/web" in metrics or "loss/code" in metrics
        tick()

    return {"sources": sources, "plan": plan, "ckpt": None, "F": F, "model": model,
            "opt": torch.optim.SGD(model.parameters(), lr=0.1), "log": log,
            "save": saved.append, "path": str(folder / "checkpoint")}  # fmt: skip


def online(folder: Path) -> dict[str, Any]:
    import torch.nn.functional as F  # noqa: N812

    from annealmix import Mixture

    sources = {"web": _windows(0, 1, 4000), "code": _windows(1, 33, 4000)}
    lm = _tiny_lm()

    def per_sample_loss(model, batch):
        x = batch["sample"]
        loss = F.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:], reduction="none")
        return loss.mean(dim=1).detach()

    return {"mixture": Mixture(weights={"web": 0.5, "code": 0.5}), "N": 300,
            "sizes": {n: len(s) for n, s in sources.items()}, "sources": sources, "model": lm,
            "per_sample_loss": per_sample_loss,
            "reference_losses": {"web": 3.0, "code": 3.0}}  # fmt: skip


def huggingface(folder: Path) -> dict[str, Any]:
    import datasets
    import transformers

    from annealmix import Mixture, Plan

    rng = np.random.default_rng(0)

    def rows(low: int, n: int = 300):
        ids = rng.integers(low, low + 30, (n, SEQ)).tolist()
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})

    code, prose = rows(1), rows(33)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=SEQ, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
        eos_token_id=0))  # fmt: skip
    tick = _after(4)
    model.register_forward_pre_hook(lambda module, args: tick())  # forward's signature kept
    plan = Plan(Mixture(weights={"code": 0.5, "prose": 0.5}), global_batch_size=32,
                sizes={"code": len(code), "prose": len(prose)})  # fmt: skip
    return {"code": code, "prose": prose, "model": model, "plan": plan}


def config(folder: Path) -> dict[str, Any]:
    """``examples/mix.toml`` as the fence reads it: with token files for each source."""
    (folder / "examples").mkdir()
    lines = ["global_batch_size = 8", "num_steps = 100", ""]
    for k, name in enumerate(("web", "code")):
        tokens = np.random.default_rng(k).integers(0, 50, 5000).astype(np.uint16)
        np.save(folder / "examples" / f"{name}.npy", tokens)
        lines += [f"[sources.{name}]", "weight = 0.5", f'path = "{name}.npy"', 'format = "npy"',
                  f"seq_len = {SEQ}", ""]  # fmt: skip
    (folder / "examples" / "mix.toml").write_text("\n".join(lines))
    return {}


def megatron(folder: Path) -> dict[str, Any]:
    """Three Megatron pairs under ``data/`` (megatron-core's own builder writes them),
    each a few windows of 4,096 tokens, and a data-file-list of them in two corpora."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    (folder / "data").mkdir()
    rng = np.random.default_rng(0)
    for name in ("web", "code", "math"):
        builder = IndexedDatasetBuilder(str(folder / "data" / f"{name}_text_document.bin"),
                                        dtype=np.uint16)  # fmt: skip
        for _ in range(40):
            builder.add_document(torch.from_numpy(rng.integers(1, 1000, 500).astype(np.int64)),
                                 [500])  # fmt: skip
        builder.finalize(str(folder / "data" / f"{name}_text_document.idx"))
    (folder / "data-file-list.txt").write_text(
        "0.6 data/web_text_document text\n0.3 data/code_text_document text\n"
        "0.1 data/math_text_document math\n"
    )
    return {}


def cooldown(folder: Path) -> dict[str, Any]:
    """Two data-file-lists over the Megatron pairs, written to nine decimals: corpus
    ``text`` (two files, 2:1 in both lists), and ``math``, which the cooldown brings in."""
    megatron(folder)
    for name, text in {"pretrain.txt": 1.0, "cooldown.txt": 0.7}.items():
        lines = [f"{text * 2 / 3:.9f} data/web_text_document text",
                 f"{text / 3:.9f} data/code_text_document text"]  # fmt: skip
        if text < 1:
            lines.append(f"{1 - text:.9f} data/math_text_document math")
        (folder / name).write_text("\n".join(lines) + "\n")
    return {}


def olmo(folder: Path) -> dict[str, Any]:
    """``mix.toml``, OLMo-core's smallest transformer in its train module, and a trainer
    config that trains it for 3 steps."""
    from olmo_core.nn.transformer import TransformerConfig
    from olmo_core.optim import AdamWConfig
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    config(folder)  # examples/mix.toml and its token files; mix.toml reads the same
    text = (folder / "examples" / "mix.toml").read_text()
    (folder / "mix.toml").write_text(text.replace('path = "', 'path = "examples/'))
    model = TransformerConfig.olmo2_1M(vocab_size=64).build(init_device="cpu")
    train_module = TransformerTrainModuleConfig(
        rank_microbatch_size=8 * SEQ, max_sequence_length=SEQ, optim=AdamWConfig(lr=1e-3)
    ).build(model)
    trainer_config = TrainerConfig(save_folder=str(folder / "ckpt"), no_checkpoints=True,
                                   max_duration=Duration.steps(3))  # fmt: skip
    return {"train_module": train_module, "trainer_config": trainer_config}


def torchtitan(folder: Path) -> dict[str, Any]:
    """``mix.toml`` where the registry's function looks for it (the working folder)."""
    (folder / "mix.toml").write_text(
        f"global_batch_size = 8\nnum_steps = 50\n[sources.web]\nweight = 1\nsize = 100\n"
        f"seq_len = {SEQ}\n"
    )
    return {}


def one_unit_a_corpus(namespace: dict[str, Any]) -> None:
    """The two lists' corpora are counted as units: one per corpus."""
    from annealmix._counting.grouped import units

    mix, corpora = namespace["mix"], namespace["corpora"]
    ids = {n: k for k, n in enumerate(mix.sources)}
    assert len(units(mix, tuple(tuple(ids[n] for n in ns) for ns in corpora.values()))[0]) == 2


def titan_registry(namespace: dict[str, Any]) -> None:
    """The registry's function gives torchtitan's config with the mixture's fields."""
    config = namespace["llama3_debugmodel_annealmix"]()
    assert config.dataloader.mix_config == "mix.toml"
    assert (config.training.global_batch_size, config.training.seq_len) == (8, SEQ)
    assert config.training.steps == 50


# Every page with Python fences, and the world its fences run in (None: none needed).
WORLDS = {
    "README.md": None,
    "docs/index.md": None,
    "docs/concepts.md": None,
    "docs/config.md": config,
    "docs/cooldown.md": cooldown,
    "docs/replanning.md": None,
    "docs/launchers.md": None,
    "docs/huggingface.md": huggingface,
    "docs/megatron.md": megatron,
    "docs/online.md": online,
    "docs/pytorch.md": pytorch,
    "docs/torchtitan.md": torchtitan,
    "docs/olmo.md": olmo,
}
# What runs after a page's fences, on their namespace, where they only define.
AFTER = {"docs/torchtitan.md": titan_registry, "docs/cooldown.md": one_unit_a_corpus}
# What a page's fences import, beyond numpy and annealmix: a page is skipped (said so)
# where one is missing, and run where it is (torchtitan's in its own environment).
NEEDS = {
    "docs/huggingface.md": ("torch", "transformers", "datasets", "accelerate"),
    "docs/megatron.md": ("torch", "megatron.core"),
    "docs/cooldown.md": ("torch", "megatron.core"),
    "docs/online.md": ("torch",),
    "docs/launchers.md": ("torch",),
    "docs/pytorch.md": ("torch",),
    "docs/config.md": ("torch",),
    "docs/torchtitan.md": ("torch", "torchtitan"),
    "docs/olmo.md": ("torch", "olmo_core"),
}
