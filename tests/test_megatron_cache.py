"""Megatron's own blend cache written from a plan: megatron-core's builder loads it and
reads the plan's (dataset, sample) pairs, building nothing."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("megatron.core.datasets.gpt_dataset")

from megatron.core.datasets import helpers  # noqa: E402
from megatron.core.datasets.blended_dataset import BlendedDataset  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import (  # noqa: E402
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig  # noqa: E402
from test_sources import write_megatron  # noqa: E402

from annealmix import Mixture, Phase, Plan, TokenWindows  # noqa: E402
from annealmix.shard import turn  # noqa: E402
from annealmix.torch.megatron import MegatronDataset  # noqa: E402
from annealmix.torch.megatron_cache import write_blend_cache  # noqa: E402

B, STEPS, SEQ = 16, 60, 8


class Tokenizer:
    """The ids and identity Megatron's GPTDataset reads from its tokenizer."""

    eod, pad, vocab_size = 0, 0, 1000
    unique_identifiers = {"class": "test"}


def setup(tmp_path):
    rng = np.random.default_rng(0)
    prefixes = {}
    for name in ("web", "code", "math", "books", "unused"):
        docs = [rng.integers(1, 999, int(n)).tolist() + [0] for n in rng.integers(5, 40, 80)]
        write_megatron(tmp_path / f"{name}_text_document", docs)
        prefixes[name] = str(tmp_path / f"{name}_text_document")
    start = {"web": 0.7, "code": 0.2, "math": 0.0, "books": 0.1, "unused": 0.0}
    target = {"web": 0.2, "code": 0.3, "math": 0.4, "books": 0.1, "unused": 0.0}
    mix = Mixture(weights=start, phases=[Phase(start_step=20, end_step=49, weights=target)])
    plan = Plan(mix, global_batch_size=B, seed=3, sizes=dict.fromkeys(start, 80))
    # the run's config as Megatron-LM builds it from its arguments (a static blend of the
    # same files, which the export replaces)
    config = GPTDatasetConfig(random_seed=1, sequence_length=SEQ, split="100,0,0",
                              blend=(list(prefixes.values()), None),
                              tokenizer=Tokenizer(), reset_position_ids=False,
                              reset_attention_mask=False, eod_mask_loss=False,
                              path_to_cache=str(tmp_path / "cache"))  # fmt: skip
    return plan, prefixes, config


def test_megatrons_builder_loads_the_cache_and_reads_the_plans_pairs(tmp_path, monkeypatch):
    plan, prefixes, config = setup(tmp_path)
    cache = write_blend_cache(plan, prefixes, config, num_steps=STEPS)
    assert cache.samples == STEPS * B and STEPS * B * 10 <= cache.bytes <= (STEPS * B + 4) * 10
    assert [p.name.split("-", 1)[1] for p in cache.files] == [
        "BlendedDataset-train-description.txt", "BlendedDataset-train-dataset_index.npy",
        "BlendedDataset-train-dataset_sample_index.npy"]  # fmt: skip
    # The run, as Megatron-LM builds it from --data-path and --data-cache-path: a cache
    # hit (its own index builder would raise) that reads the plan's pairs.
    words = cache.data_path
    assert "unused" not in " ".join(words)  # never drawn: left out (Megatron refuses 0)
    blend = (words[1::2], [float(w) for w in words[0::2]])
    run = dataclasses.replace(config, blend=blend)

    def refuse(*args, **kwargs):
        raise AssertionError("Megatron rebuilt the blend")

    monkeypatch.setattr(helpers, "build_blending_indices", refuse)
    train = BlendedMegatronDatasetBuilder(GPTDataset, [STEPS * B, 0, 0], lambda: True,
                                          run).build()[0]  # fmt: skip
    assert isinstance(train, BlendedDataset) and cache.bytes == 10 * len(train)
    windows = {n: TokenWindows(np.arange(80 * SEQ + 1), SEQ) for n in plan.mixture.sources}
    ours = MegatronDataset(windows, plan, num_steps=STEPS)  # annealmix's own global index
    ids = {p: i for i, p in enumerate(words[1::2])}
    names = plan.mixture.sources
    for i in range(STEPS * B):
        source, _, _ = ours.locate(i)
        assert train.dataset_index[i] == ids[prefixes[names[source]]]
    batch = plan.batches(0, STEPS)
    for i in range(STEPS * B):  # each sample is its position's draw from its source
        step, j = divmod(i, B)
        assert train.dataset_sample_index[i] == batch.draws[step, (j + turn(step, B)) % B]
    for k, name in enumerate(names[:4]):  # so each dataset's samples are 0, 1, ... once
        mine = train.dataset_sample_index[: STEPS * B][train.dataset_index[: STEPS * B] ==
                                                       ids[prefixes[name]]]  # fmt: skip
        assert sorted(mine.tolist()) == list(range(int((batch.sources == k).sum())))
    # the anneal: no math before step 20, and 40% of the batches after step 49 (6.4 of 16)
    per_step = (train.dataset_index[: STEPS * B].reshape(STEPS, B) == ids[prefixes["math"]])
    assert per_step[:20].sum() == 0
    assert set(per_step[50:].sum(axis=1).tolist()) == {6, 7} and per_step[50:].sum() == 64
    sample = train[5]  # Megatron's own sample dict, from the dataset and sample named
    assert sample["dataset_id"] == train.dataset_index[5] and len(sample["tokens"]) == SEQ


def test_bad_calls_say_what_is_missing(tmp_path):
    plan, prefixes, config = setup(tmp_path)
    with pytest.raises(ValueError, match=r"prefixes has no Megatron pair for sources \['math'\]"):
        write_blend_cache(plan, {k: v for k, v in prefixes.items() if k != "math"}, config,
                          num_steps=STEPS)  # fmt: skip
    with pytest.raises(ValueError, match="config.path_to_cache is not set"):
        write_blend_cache(plan, prefixes, dataclasses.replace(config, path_to_cache=None),
                          num_steps=STEPS)  # fmt: skip


def test_a_blend_that_cannot_hold_the_plan_is_refused_before_writing():
    from annealmix.torch.megatron_cache import _check

    with pytest.raises(ValueError, match="the plan draws 9 samples of Megatron dataset 1, "
                                         "which holds 8"):  # fmt: skip
        _check(100, 96, np.array([3, 9]), np.array([5, 8]))
    with pytest.raises(ValueError, match="holds 90 samples, fewer than the run's 96"):
        _check(90, 96, np.array([3, 9]), np.array([5, 10]))
    _check(96, 96, np.array([5, 8]), np.array([5, 8]))  # exactly enough
