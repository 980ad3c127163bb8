"""torchtitan's dataloader protocol, against the real torchtitan package.

torchtitan pins datasets < 4.8 and more; CI runs this file in an environment of its
own (``.ci/run``: ``pip install ".[titan]"``); elsewhere it is skipped.
"""

import numpy as np
import pytest

pytest.importorskip("torchtitan.components.dataloader")
import torch  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
from torchtitan.components.dataloader import BaseDataLoader  # noqa: E402
from torchtitan.components.loss import IGNORE_INDEX  # noqa: E402
from torchtitan.models.llama3.config_registry import llama3_debugmodel  # noqa: E402

from annealmix import Stream  # noqa: E402
from annealmix.config import load_config  # noqa: E402
from annealmix.sources import read_one  # noqa: E402
from annealmix.titan import AnnealmixDataLoader, with_mixture  # noqa: E402

SEQ = 16
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def write_mix(tmp_path, output="dict", batch=8, extra=""):
    rng = np.random.default_rng(0)
    for name, (low, high) in {"web": (5, 60), "code": (30, 200)}.items():
        docs = [np.append(rng.integers(1, 999, n - 1), 0) for n in rng.integers(low, high, 80)]
        np.concatenate(docs).astype(np.uint16).tofile(tmp_path / f"{name}.bin")
    source = 'path = "{0}.bin"\nformat = "nanogpt"\neos_id = 0\nseq_len = ' + f"{SEQ}\n"
    path = tmp_path / "mix.toml"
    path.write_text(
        f'global_batch_size = {batch}\nnum_steps = 12\nseed = 3\noutput = "{output}"\n{extra}'
        f"[sources.web]\nweight = 0.8\n{source.format('web')}"
        f"[sources.code]\nweight = 0.2\n{source.format('code')}"
        "[[phases]]\nstart_step = 2\nend_step = 9\nweights = { code = 1 }\n"
    )
    return path


def build(path, world, rank, local=2, **config):
    return AnnealmixDataLoader.Config(mix_config=str(path), **config).build(
        dp_world_size=world, dp_rank=rank, tokenizer=None, seq_len=SEQ,
        local_batch_size=local, snapshot_every_n_steps=1,
    )  # fmt: skip


def test_it_is_torchtitans_dataloader_and_covers_the_global_stream(tmp_path):
    path = write_mix(tmp_path)
    opened = load_config(path).open()
    sources, plan = opened.sources, opened.plan
    names = plan.mixture.sources
    want = Stream(plan).take(12)
    for world in (1, 2, 4):
        loaders = [build(path, world, r) for r in range(world)]
        assert all(isinstance(x, BaseDataLoader) for x in loaders)
        accumulation = 8 // (2 * world)
        batches = [list(x) for x in loaders]
        assert all(len(b) == 12 * accumulation for b in batches)
        for step in (0, 5, 11):
            got = []
            for b in batches:
                for inputs, labels in b[step * accumulation : (step + 1) * accumulation]:
                    assert inputs["input"].shape == labels.shape == (2, SEQ)
                    got += inputs["input"].tolist()
            expect = []
            for k, d, i in zip(want.sources[step], want.draws[step], want.indices[step]):
                source = sources[names[k]]
                sample = read_one(source, int(d) // len(source), int(i))
                expect.append(sample["tokens"].tolist())
            assert sorted(got) == sorted(expect)  # the ranks' micro-batches tile the batch


def test_megatrons_switches_reach_the_positions_and_the_ignored_targets(tmp_path):
    inputs, labels = next(iter(build(write_mix(tmp_path), 1, 0, local=8)))
    assert (inputs["positions"] == torch.arange(SEQ)).all()  # Megatron's defaults: off
    assert (labels == IGNORE_INDEX).sum() == 0  # packing leaves no padding to ignore
    extra = "reset_position_ids = true\neod_mask_loss = true\n"
    inputs, labels = next(iter(build(write_mix(tmp_path, extra=extra), 1, 0, local=8)))
    positions, eod = inputs["positions"], inputs["input"] == 0
    assert (positions[:, 1:] - positions[:, :-1] != 1).any()  # a document starts mid-window
    assert torch.equal(positions[:, 1:] == 0, eod[:, :-1])  # ... after each EOD
    assert torch.equal(labels == IGNORE_INDEX, eod)  # no loss on the EOD's target
    tokens_view = build(write_mix(tmp_path, output="tokens"), 1, 0, local=8)
    plain, targets = next(iter(tokens_view))
    assert set(plain) == {"input"}
    assert torch.equal(plain["input"][:, 1:], targets[:, :-1])


def test_the_state_is_one_key_saved_once_and_resumes_on_another_dp_degree(tmp_path):
    path = write_mix(tmp_path)
    loaders = [build(path, 2, r) for r in range(2)]
    iters = [iter(x) for x in loaders]
    for _ in range(2 * 5):  # 5 steps of 2 micro-batches
        for it in iters:
            next(it)
    states = [x.state_dict() for x in loaders]
    assert states[0] == states[1] and list(states[0]) == ["annealmix"]
    dcp.save({"dataloader": loaders[0]}, checkpoint_id=str(tmp_path / "ckpt"))
    rest = {}
    for world in (1, 4):
        got = []
        for rank in range(world):
            resumed = build(path, world, rank, local=2 if world == 1 else 1)
            dcp.load({"dataloader": resumed}, checkpoint_id=str(tmp_path / "ckpt"))
            got += [inputs["input"] for inputs, _ in resumed]
        rest[world] = sorted(t.tolist() for batch in got for t in batch)
    tail = [inputs["input"] for it in iters for inputs, _ in it]
    assert rest[1] == rest[4] == sorted(t.tolist() for batch in tail for t in batch)


def test_blendcorpus_resume_hook_goes_on_from_the_global_step(tmp_path):
    path = write_mix(tmp_path)
    ran = build(path, 1, 0)
    it = iter(ran)
    for _ in range(4 * 5):  # 5 steps of 4 micro-batches
        next(it)
    tail = [inputs["input"] for inputs, _ in it]
    resumed = build(path, 1, 0)
    resumed.set_consumed_by_global_step(5, 8)  # as BlendCorpus's trainer calls it
    again = [inputs["input"] for inputs, _ in resumed]
    assert len(again) == len(tail) and all(torch.equal(a, b) for a, b in zip(again, tail))
    assert resumed.state_dict() == ran.state_dict()
    with pytest.raises(ValueError, match="global_batch_size 16 is not the mixture's 8"):
        resumed.set_consumed_by_global_step(5, 16)


def test_an_empty_state_starts_afresh_and_a_foreign_one_is_refused(tmp_path):
    loader = build(write_mix(tmp_path), 1, 0)
    loader.load_state_dict({})
    first = next(iter(loader))[0]["input"]
    assert torch.equal(first, next(iter(build(write_mix(tmp_path), 1, 0)))[0]["input"])
    with pytest.raises(ValueError, match="saved by another dataloader"):
        loader.load_state_dict({"dp_rank_0": b"", "world_size": 1})


def test_bad_settings_name_the_fix(tmp_path):
    path = write_mix(tmp_path)
    with pytest.raises(ValueError, match="needs mix_config"):
        AnnealmixDataLoader.Config().build(
            dp_world_size=1, dp_rank=0, seq_len=SEQ, local_batch_size=2
        )
    with pytest.raises(ValueError, match="not a multiple of local_batch_size 3"):
        build(path, 1, 0, local=3)
    with pytest.raises(ValueError, match="must be the model's seq_len 32"):
        AnnealmixDataLoader.Config(mix_config=str(path)).build(
            dp_world_size=1, dp_rank=0, seq_len=32, local_batch_size=2
        )
    ramped = write_mix(tmp_path, extra="rampup_batch_size = [4, 4, 40]\n")
    with pytest.raises(ValueError, match="takes one global_batch_size, and this config ramps"):
        build(ramped, 1, 0)
    with pytest.raises(ValueError, match="takes one global_batch_size, and this config ramps"):
        with_mixture(llama3_debugmodel(), str(ramped))


def test_the_example_config_registry_loads_through_torchtitans_config_manager(
    tmp_path, monkeypatch
):
    pytest.importorskip("triton")  # torchtitan's model registry imports it (CPU-installable)
    import subprocess
    import sys
    from pathlib import Path

    from torchtitan.config import ConfigManager

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(root / "examples" / "titan" / "prepare.py"),
                    str(tmp_path), "--steps", "40"], check=True, capture_output=True)  # fmt: skip
    monkeypatch.setenv("ANNEALMIX_MIX", str(tmp_path / "mix.toml"))
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    config = ConfigManager().parse_args(
        ["--module", "examples.titan", "--config", "llama3_debugmodel_annealmix"]
    )
    assert isinstance(config.dataloader, AnnealmixDataLoader.Config)
    training = config.training
    assert (training.global_batch_size, training.seq_len, training.steps) == (32, 256, 40)
    # as torchtitan's Trainer builds it, on data-parallel rank 1 of 2
    loader = config.dataloader.build(
        dp_world_size=2, dp_rank=1, tokenizer=None, seq_len=training.seq_len,
        local_batch_size=training.local_batch_size, snapshot_every_n_steps=None,
    )  # fmt: skip
    assert len(loader) == 40 * 2  # 32 = 8 x 2 ranks x 2 accumulation steps
    inputs, labels = next(iter(loader))
    assert inputs["input"].shape == inputs["positions"].shape == labels.shape == (8, 256)
    assert int(inputs["input"].max()) < 256  # byte tokens


def test_the_gpu_check_drives_torchtitan_with_arguments_its_config_manager_takes(
    tmp_path, monkeypatch
):
    # benchmarks/gpu_check.py runs only where a GPU is; its trainer command and its
    # reading of torchtitan's log are checked here, on CPU.
    pytest.importorskip("triton")
    import subprocess
    import sys
    from pathlib import Path

    from torchtitan.components.tokenizer import HuggingFaceTokenizer
    from torchtitan.config import ConfigManager

    root = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    import gpu_check

    data = tmp_path / "data"
    subprocess.run([sys.executable, str(root / "examples" / "titan" / "prepare.py"), str(data),
                    "--steps", "60"], check=True, capture_output=True)  # fmt: skip
    command = gpu_check.trainer(tmp_path, data, "straight", 60)
    monkeypatch.setenv("ANNEALMIX_MIX", str(data / "mix.toml"))
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    config = ConfigManager().parse_args(command[command.index("--module"):])
    assert config.training.steps == 60 and config.checkpoint.enable
    assert config.debug.deterministic and config.checkpoint.interval == 50
    tokenizer = HuggingFaceTokenizer.Config().build(tokenizer_path=config.hf_assets_path)
    assert tokenizer.get_vocab_size() == 256  # the byte tokenizer prepare.py writes
    log = ("\x1b[31mstep:  7  \x1b[32mloss:  5.41230  \x1b[33mgrad_norm:  1.2\n"
           "\x1b[31mstep:  8  \x1b[32mloss:  5.40001  \x1b[33mgrad_norm:  1.1\n")  # fmt: skip
    assert gpu_check.losses(log) == {7: "5.41230", 8: "5.40001"}
