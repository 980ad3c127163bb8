"""OLMo-core's own Trainer on an annealmix mixture, on CPU: 2 ranks under torchrun,
SIGKILL of the launcher and every worker and a resume that repeats the run exactly,
and a resume on 1 rank that reads the same samples per global batch.

Runs in the OLMo-core environment of ``.ci/run`` (``ai2-olmo-core`` pins its own
Hugging Face packages), skipped elsewhere."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("olmo_core")
torch = pytest.importorskip("torch")

from annealmix.config import load_config  # noqa: E402
from annealmix.olmo import AnnealmixDataLoader, AnnealmixDataLoaderConfig  # noqa: E402

WORKER = Path(__file__).with_name("olmo_worker.py")
STEPS, B, SEQ = 16, 8, 16
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def write_mix(folder: Path, extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    np.save(folder / "web.npy", rng.integers(1, 30, 20_000).astype(np.uint16))
    np.save(folder / "code.npy", rng.integers(30, 60, 20_000).astype(np.uint16))
    np.save(folder / "web-val.npy", rng.integers(1, 30, 7 * SEQ + 1).astype(np.uint16))
    np.save(folder / "code-val.npy", rng.integers(30, 60, 4 * SEQ + 1).astype(np.uint16))
    source = 'path = "{}.npy"\nformat = "npy"\nseq_len = ' + f"{SEQ}\n"
    (folder / "mix.toml").write_text(
        f"global_batch_size = {B}\nnum_steps = {STEPS}\nseed = 1\n{extra}"
        f"[sources.web]\nweight = 0.9\n{source.format('web')}"
        f"[sources.code]\nweight = 0.1\n{source.format('code')}"
        "[[phases]]\nstart_step = 3\nend_step = 12\nweights = { code = 1 }\n"
    )
    return folder / "mix.toml"


def launch(folder: Path, ranks: int, *kill_at: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={ranks}", str(WORKER), str(folder), str(STEPS),
               *map(str, kill_at)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def finish(job: subprocess.Popen) -> None:
    try:
        err, _ = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    assert job.returncode == 0, err.decode()[-3000:]


def steps(folder: Path, world: int) -> dict[int, list[dict]]:
    """Each step's entries of every rank, the last run's where a step ran twice."""
    out: dict[int, list[dict]] = {}
    for rank in range(world):
        for line in (folder / f"audit-{world}-{rank}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            out.setdefault(entry["step"], [None] * world)[rank] = entry
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    write_mix(folder)
    finish(launch(folder, 2))
    return folder


def test_the_trainer_reads_the_plan_step_by_step_and_logs_the_mix(straight):
    config = load_config(straight / "mix.toml")
    plan = config.open().plan
    run = steps(straight, 2)
    assert sorted(run) == list(range(1, STEPS + 1))
    counts = plan.counts(0, STEPS)
    for step, ranks in run.items():  # every step: the plan's global batch, split in two
        ids = [k for entry in ranks for k in entry["sources"]]
        assert np.bincount(ids, minlength=2).tolist() == counts[step - 1].tolist()
        assert all(len(entry["samples"]) == B // 2 for entry in ranks)
        assert ranks[0]["weights"] == ranks[1]["weights"]  # one model (DDP), as trained
    assert counts[0].tolist() == [7, 1] and counts[-1].tolist() == [0, 8]  # annealed
    logged: dict[int, dict] = {}  # as OLMo logged them (a step's may come in parts)
    for line in (straight / "mix-metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        logged.setdefault(entry.pop("step"), {}).update(entry)
    first = logged[1]
    assert first["mix/weight/web"] == pytest.approx(0.9) and first["mix/share/code"] == 1 / 8
    assert "mix/loss/web" in first and "mix/loss/code" in first
    assert "mix/loss/web" not in logged[15]  # step 15 draws no web: no web loss
    assert logged[15]["mix/share/code"] == 1.0
    held = {step: x for step, x in logged.items() if "eval/loss/web" in x}
    assert sorted(held) == [8, 16]  # every 8 steps, each source's held-out mean
    assert 0 < held[8]["eval/loss/code"] < 10
    assert held[8]["eval/loss/web"] != held[16]["eval/loss/web"]  # the model moved
    alone = json.loads((straight / "held-out.json").read_text())  # one rank, after step 16
    assert held[16]["eval/loss/web"] == pytest.approx(alone["web"], rel=1e-6)
    assert held[16]["eval/loss/code"] == pytest.approx(alone["code"], rel=1e-6)


def test_sigkill_and_resume_repeat_the_run_exactly(straight, tmp_path):
    write_mix(tmp_path)
    killed = launch(tmp_path, 2, 10)  # rank 0 SIGKILLs the launcher and the workers at step 10
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "ckpt" / "step12").exists()  # the last checkpoint: step 8
    finish(launch(tmp_path, 2))
    audit = tmp_path / "audit-2-0.jsonl"
    lines = audit.read_text().splitlines()
    assert len(lines) > STEPS  # steps after the checkpoint ran twice
    assert steps(tmp_path, 2) == steps(straight, 2)  # samples and losses, bit for bit


def test_a_two_rank_checkpoint_resumes_on_one_rank_with_the_same_global_batches(
    straight, tmp_path
):
    write_mix(tmp_path)
    (tmp_path / "ckpt").mkdir()
    for step in ("step8",):  # the 2-rank run's checkpoint at step 8, resumed on 1 rank
        subprocess.run(["cp", "-r", str(straight / "ckpt" / step), str(tmp_path / "ckpt")],
                       check=True)  # fmt: skip
    finish(launch(tmp_path, 1))
    one, two = steps(tmp_path, 1), steps(straight, 2)
    assert sorted(one) == list(range(9, STEPS + 1))
    for step, (entry,) in one.items():
        both = [h for e in two[step] for h in e["samples"]]
        assert sorted(entry["samples"]) == sorted(both)


def test_bad_settings_name_the_fix(tmp_path):
    path = write_mix(tmp_path)
    config = load_config(path)
    opened = config.open()
    with pytest.raises(ValueError, match="does not split over 3 data-parallel ranks"):
        AnnealmixDataLoader(dict(opened.sources), opened.plan, num_steps=4, work_dir=".",
                            dp_world_size=3)  # fmt: skip
    loader = AnnealmixDataLoader(dict(opened.sources), opened.plan, num_steps=4, work_dir=".")
    assert loader.global_batch_size == B * SEQ and loader.total_batches == 4
    with pytest.raises(ValueError, match="epoch 2 would read past it"):
        loader.reshuffle(epoch=2)
    with pytest.raises(ValueError, match="fixed at 128 tokens, not 256"):
        loader.global_batch_size = 256
    with pytest.raises(ValueError, match="lacks \\['batches_processed'\\]"):
        loader.load_state_dict({"annealmix": loader.state_dict()["annealmix"]})
    state = loader.state_dict() | {"batches_processed": 3}
    with pytest.raises(ValueError, match="at batch 3 of the epoch but its stream at step 0"):
        loader.load_state_dict(state)
    mock = loader.get_mock_batch()
    assert mock["input_ids"].shape == (B, SEQ) and mock["labels"].shape == (B, SEQ)
    ramped = write_mix(tmp_path, "rampup_batch_size = [4, 4, 40]\n")
    with pytest.raises(ValueError, match="the plan's batch size ramps"):
        AnnealmixDataLoaderConfig(mix_config=str(ramped)).build()
