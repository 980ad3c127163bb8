"""Real multi-process runs: torchrun, gloo on CPU, hard timeouts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annealmix import Shard, indexed

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds per launch; a hung collective fails the test instead of CI


def torchrun(nproc: int, script: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(script),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        start_new_session=True,
        **kw,
    )


def check(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.dist
def test_two_ranks_agree_with_the_single_process_stream(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import dist_worker

    check(torchrun(2, ROOT / "tests" / "dist_worker.py", str(tmp_path / "out")))
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    p = dist_worker.plan()
    ref = indexed(p, p.batches(0, dist_worker.STEPS))
    values = np.where(ref.sources == 0, 0, np.where(ref.sources == 1, 1000, 2000)) + ref.indices
    for r in ranks:
        assert r["world"] == 2
        got = np.array(r["loaded"])
        shard = Shard(global_batch_size=p.global_batch_size, rank=r["rank"], world_size=2)
        mine = np.take_along_axis(values, shard.columns(np.arange(dist_worker.STEPS)), axis=1)
        assert np.array_equal(got, mine)
        for step, summed in enumerate(r["summed"]):  # all-reduced rank counts = the global batch
            counts = p.counts(step)[0]
            assert [summed[f"mix/rank_count/{n}"] for n in p.mixture.sources] == counts.tolist()
    assert ranks[0]["state"] == ranks[1]["state"]


@pytest.mark.dist
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI's mpirun is not installed")
def test_two_mpi_ranks_from_open_mpis_environment_split_the_stream(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import dist_worker

    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=str(ROOT / "tests"))  # fmt: skip
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID"):
        env.pop(var, None)  # the ranks must come from Open MPI's own variables
    cmd = ["mpirun", "--oversubscribe", "-np", "2", sys.executable,
           str(ROOT / "tests" / "mpi_worker.py"), str(tmp_path / "out")]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    check(run)
    p = dist_worker.plan()
    ref = indexed(p, p.batches(0, dist_worker.STEPS))
    values = np.where(ref.sources == 0, 0, np.where(ref.sources == 1, 1000, 2000)) + ref.indices
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    for r in ranks:
        assert (r["world"], r["local_rank"]) == (2, r["rank"])  # one node: local = global
        shard = Shard(global_batch_size=p.global_batch_size, rank=r["rank"], world_size=2)
        mine = np.take_along_axis(values, shard.columns(np.arange(dist_worker.STEPS)), axis=1)
        assert np.array_equal(np.array(r["loaded"]), mine)
        assert r["tail"] == r["loaded"][5:]  # a state saved by the rank resumes it exactly


@pytest.mark.dist
@pytest.mark.slow
def test_a_dcp_checkpoint_from_two_ranks_resumes_on_one_two_and_four(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import dcp_worker
    import dist_worker

    script, ckpt = ROOT / "tests" / "dcp_worker.py", str(tmp_path / "ckpt")
    check(torchrun(2, script, "save", ckpt, str(tmp_path / "save")))
    p = dist_worker.plan()
    ref = indexed(p, p.batches(0, dist_worker.STEPS))
    values = np.where(ref.sources == 0, 0, np.where(ref.sources == 1, 1000, 2000)) + ref.indices
    steps = np.arange(dcp_worker.SAVED_AT, dist_worker.STEPS)
    for world in (1, 2, 4):
        out = tmp_path / f"load{world}"
        check(torchrun(world, script, "load", ckpt, str(out)))
        ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
        assert len({json.dumps(r["state"], sort_keys=True) for r in ranks}) == 1  # one state
        for r in ranks:
            shard = Shard(global_batch_size=p.global_batch_size, rank=r["rank"], world_size=world)
            cols = shard.columns(steps)  # a slice for one rank, turning windows for more
            mine = values[steps][:, cols] if isinstance(cols, slice) else (
                np.take_along_axis(values[steps], cols, axis=1))  # fmt: skip
            assert np.array_equal(np.array(r["loaded"]), mine), f"world {world} rank {r['rank']}"
    saved = json.loads((tmp_path / "save.0").read_text())["state"]
    grow = tmp_path / "grow"
    check(torchrun(2, script, "grow", ckpt, str(grow)))  # a fourth source, re-planned
    ranks = [json.loads(Path(f"{grow}.{r}").read_text()) for r in range(2)]
    assert ranks[0]["state"] == ranks[1]["state"]
    start = dict(zip(p.mixture.sources, saved["counts"]))
    new_plan, _ = dcp_worker.grown()
    final = dict(zip(new_plan.mixture.sources, ranks[0]["consumed"]))
    assert all(final[k] >= start[k] for k in start) and final["d"] > 0
    assert sum(final.values()) == p.global_batch_size * dist_worker.STEPS


def audit(path: Path) -> list[str]:
    """The audit without the rank column: which samples each step consumed."""
    return sorted(" ".join(x.split()[:1] + x.split()[2:]) for x in path.read_text().splitlines())


@pytest.mark.dist
@pytest.mark.slow
def test_killed_run_resumes_with_nothing_lost_or_repeated_on_any_world_size(tmp_path):
    script = ROOT / "examples" / "train_ddp.py"
    common = ["--steps", "24", "--ckpt-every", "5", "--log-every", "100"]

    def run(nproc, name, *extra):
        return torchrun(
            nproc,
            script,
            *common,
            "--ckpt-dir",
            str(tmp_path / name),
            "--audit",
            str(tmp_path / name / "audit.txt"),
            *extra,
        )

    check(run(2, "whole"))
    reference = audit(tmp_path / "whole" / "audit.txt")
    assert len(reference) == 24 * 16

    crashed = run(2, "crash", "--crash-at-step", "13")
    assert crashed.returncode != 0  # SIGKILLed mid-way, after the step-10 checkpoint
    assert len(audit(tmp_path / "crash" / "audit.txt")) == 13 * 16
    check(run(2, "crash"))
    assert audit(tmp_path / "crash" / "audit.txt") == reference

    for nproc in (1, 4):  # 2 ranks -> 1 and 1 -> 4: the same global stream
        crashed = run(2 if nproc == 1 else 1, f"to{nproc}", "--crash-at-step", "13")
        assert crashed.returncode != 0
        resumed = run(nproc, f"to{nproc}")
        check(resumed)
        assert "resumed at step 10" in resumed.stdout
        assert audit(tmp_path / f"to{nproc}" / "audit.txt") == reference


@pytest.mark.dist
@pytest.mark.slow
def test_replan_mid_run_repeats_no_sample(tmp_path):
    script = ROOT / "examples" / "train_ddp.py"
    args = [
        "--steps",
        "24",
        "--ckpt-every",
        "5",
        "--log-every",
        "100",
        "--ckpt-dir",
        str(tmp_path),
        "--audit",
        str(tmp_path / "audit.txt"),
    ]
    assert torchrun(2, script, *args, "--crash-at-step", "12").returncode != 0
    refused = torchrun(2, script, *args, "--end-code", "0.6")
    assert refused.returncode != 0
    assert "different plan: phases changed" in refused.stdout + refused.stderr
    check(torchrun(2, script, *args, "--end-code", "0.6", "--replan"))
    rows = [x.split() for x in (tmp_path / "audit.txt").read_text().splitlines()]
    assert len(rows) == 24 * 16
    pairs = [(source, index) for _, _, source, index in rows]
    assert len(set(pairs)) == len(pairs), "a without-replacement sample came twice"
    late = [source for step, _, source, _ in rows if int(step) >= 18]  # anneal over: 60% code
    assert late.count("code") / len(late) == pytest.approx(0.6, abs=0.05)


def two_nodes(script: Path, *args: str, crash_node_at: int | None = None) -> list[int]:
    """One job of two torchrun "nodes" (one rank each) on this host, meeting through
    c10d rendezvous on 127.0.0.1; ``crash_node_at`` SIGKILLs node 1 at that step."""
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node in range(2):
        extra = ["--crash-at-step", str(crash_node_at)] if node == 1 and crash_node_at else []
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
               "--nproc-per-node=1", "--rdzv-backend=c10d", "--max-restarts=0",
               f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=twonode{port}",
               str(script), *args, *extra]  # fmt: skip
        procs.append(subprocess.Popen(
            cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
    codes = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            raise
        codes.append((p.returncode, out))
    return codes


@pytest.mark.dist
@pytest.mark.slow
def test_a_node_killed_in_a_two_node_job_resumes_with_nothing_lost_or_repeated(tmp_path):
    script = ROOT / "examples" / "train_ddp.py"

    def args(name):
        folder = tmp_path / name
        return ["--steps", "24", "--ckpt-every", "5", "--log-every", "100",
                "--ckpt-dir", str(folder), "--audit", str(folder / "audit.txt")]  # fmt: skip

    assert [code for code, _ in two_nodes(script, *args("whole"))] == [0, 0]
    reference = audit(tmp_path / "whole" / "audit.txt")
    assert len(reference) == 24 * 16
    crashed = two_nodes(script, *args("crash"), crash_node_at=13)
    assert all(code != 0 for code, _ in crashed)  # node 1 killed; node 0 loses its peer
    assert len(audit(tmp_path / "crash" / "audit.txt")) == 13 * 16
    resumed = two_nodes(script, *args("crash"))
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-2000:]
    assert "resumed at step 10" in resumed[0][1] + resumed[1][1]
    assert audit(tmp_path / "crash" / "audit.txt") == reference


@pytest.mark.dist
@pytest.mark.slow
def test_an_online_run_killed_and_resumed_replays_its_samples_and_weight_log(tmp_path):
    import torch

    script = ROOT / "examples" / "train_ddp.py"
    common = ["--steps", "24", "--ckpt-every", "5", "--log-every", "100",
              "--online", "doremi", "--update-every", "3"]  # fmt: skip

    def run(nproc, name, *extra):
        folder = tmp_path / name
        return torchrun(nproc, script, *common, "--ckpt-dir", str(folder),
                        "--audit", str(folder / "audit.txt"), *extra)  # fmt: skip

    def log(name):
        return torch.load(tmp_path / name / "last.pt", weights_only=False)["data"]["log"]

    check(run(2, "whole"))
    reference = audit(tmp_path / "whole" / "audit.txt")
    assert len(log("whole")) == 8  # an update every 3 steps, each from the next step on
    assert run(2, "crash", "--crash-at-step", "13").returncode != 0
    check(run(2, "crash"))
    assert audit(tmp_path / "crash" / "audit.txt") == reference
    assert log("crash") == log("whole")
    # on one rank: the log saved at step 10 replays; later updates learn from a model
    # trained on another world size, so only the steps before the next one must agree
    assert run(2, "one", "--crash-at-step", "13").returncode != 0
    resumed = run(1, "one")
    check(resumed)
    assert "resumed at step 10" in resumed.stdout
    assert log("one")[:3] == log("whole")[:3]
    early = [x for x in audit(tmp_path / "one" / "audit.txt") if int(x.split()[0]) < 13]
    assert early == [x for x in reference if int(x.split()[0]) < 13]
