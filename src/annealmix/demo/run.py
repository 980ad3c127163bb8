"""``annealmix demo``: every arm x seed, in parallel processes, then the report."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _validate
from .._progress import Progress
from .arms import ARMS, DEFAULT_ARMS, Arm, load_arms
from .data import DOMAINS
from .midtrain import ARMS as STUDY_ARMS
from .report import summarise, write_outputs
from .settings import LR_SCHEDULES, RunConfig

__all__ = ["PRESETS", "add_arguments", "main", "run"]

QUICK = RunConfig(
    steps=40,
    batch=16,
    seq_len=32,
    dim=32,
    layers=1,
    heads=2,
    warmup=5,
    eval_every=4,
    eval_samples=32,
    max_bytes=1 << 17,
)


# small: the default, about 3 minutes for 5 arms x 3 seeds on 2 CPU cores. medium: a
# 25M-parameter model (8 layers, width 512, 256-byte contexts) for 3,000 steps of 64,
# meant for one GPU (chosen automatically); the same code, and far too slow on a CPU.
PRESETS = {
    "small": RunConfig(),
    "medium": RunConfig(steps=3000, batch=64, seq_len=256, dim=512, layers=8, heads=8, lr=1e-3,
                        warmup=100, eval_every=100, eval_samples=256, max_bytes=1 << 24),
}  # fmt: skip


# The mid-training study (--study midtrain): small, the default, about half an hour for
# 7 arms x 2 endings x 3 seeds on 2 CPU cores; medium, a 25M-parameter model for one GPU.
STUDY_PRESETS = {
    "small": RunConfig(steps=2000, batch=32, seq_len=64, dim=96, layers=3, heads=4, lr=3e-3,
                       warmup=50, eval_every=50, eval_samples=256, max_bytes=1 << 23),
    "medium": RunConfig(steps=3000, batch=32, seq_len=128, dim=512, layers=8, heads=8, lr=1e-3,
                        warmup=100, eval_every=100, eval_samples=256, max_bytes=1 << 23),
}  # fmt: skip
STUDY_QUICK = replace(QUICK, steps=60, eval_every=10, max_bytes=1 << 23)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    p.add_argument(
        "--study",
        choices=("midtrain",),
        help="run a study instead of the default comparison: midtrain (pre-training on one "
        "mix, then seven ways into a mid-training mix during a warm-up-stable-decay "
        "cooldown, under two decay endings; see docs/midtrain.md)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --study: print the design (each arm's exposure, the data pools, the "
        "shared training segments) and stop before training",
    )
    p.add_argument(
        "--from-results",
        type=Path,
        metavar="RESULTS_JSON",
        help="with --study: write the report and figures from a study's saved results.json "
        "instead of training (into --out)",
    )
    p.add_argument(
        "--arms",
        help=f"comma-separated arm names from: {', '.join(ARMS)} (default: all but online); "
        f"with --study midtrain from: {', '.join(STUDY_ARMS)} (default: all)",
    )
    p.add_argument("--arms-config", type=Path, help="TOML file of [[arms]] tables, used instead")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="small",
        help="model and run size: small (default, CPU minutes) or medium (25M parameters, "
        "3,000 steps: one GPU)",
    )
    p.add_argument("--steps", type=int, help=f"optimizer steps per run (small: {d.steps})")
    p.add_argument("--batch", type=int, help=f"samples per step (small: {d.batch})")
    p.add_argument("--seq-len", type=int, help=f"bytes per sample (small: {d.seq_len})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate (small: {d.lr})")
    p.add_argument(
        "--lr-schedule",
        help="constant (default: keeps the learning rate out of the switch), wsd (warm-up, "
        "stable, then a decay from 25%% of training on: the moves fall inside it) or cosine; "
        "a comma-separated list runs every arm under each: the learning-rate axis",
    )
    p.add_argument(
        "--domains",
        help="the domain the arms start on and the one they move to (default code,prose; "
        "also math: generated arithmetic, far from both)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA, else MPS, else the CPU), cpu, cuda or mps",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="runs in parallel, one process each (default: up to 2)",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (demo-out)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny model for 40 steps, one seed: for tests and CI (seconds)",
    )


def _job(arm: Arm, seed: int, cfg: RunConfig, queue: Any) -> dict[str, Any]:
    import torch

    from .train import train_one

    torch.set_num_threads(1)  # one core per run; runs go in parallel instead
    return train_one(arm, seed, cfg, queue)


def run(
    arms: list[Arm], seeds: int, cfg: RunConfig, jobs: int, lr_schedules: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Train every arm with every seed (under each learning-rate schedule given, else
    ``cfg``'s); returns the records in (schedule, arm, seed) order. With more than
    one schedule an arm's records are named ``arm@schedule``."""
    schedules = lr_schedules or (cfg.lr_schedule,)
    cfgs = {lr: replace(cfg, lr_schedule=lr) for lr in schedules}
    tasks = [(lr, arm, seed) for lr in schedules for arm in arms for seed in range(seeds)]
    bar, done = Progress(len(tasks) * cfg.steps, "steps", delay=0.0), 0
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = {pool.submit(_job, a, s, cfgs[lr], queue): (lr, a.name, s) for lr, a, s in tasks}
        records, pending, shown = {}, set(futures), -1
        while pending:
            while not queue.empty():
                done += queue.get()
            for f in [f for f in pending if f.done()]:
                records[futures[f]] = f.result()
                pending.discard(f)
            if done != shown:  # redraw on progress only (logs stay short)
                bar.update(done)
                shown = done
            if pending:
                time.sleep(0.2)
        bar.close()
    out = [records[(lr, a.name, s)] for lr, a, s in tasks]
    if len(schedules) > 1:
        for rec in out:
            rec["arm"] = f"{rec['arm']}@{rec['config']['lr_schedule']}"
    return out


def _device(device: str) -> str:
    """The device to train on: ``auto`` picks CUDA, then MPS, then the CPU; a named
    device must exist here."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            "annealmix demo trains models with PyTorch, which is not installed: "
            "pip install -c constraints.txt 'annealmix[torch]' (the constraints pin the CPU build)"
        ) from None

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if device == "auto":
        return next(kind for kind, here in available.items() if here)
    kind = device.split(":")[0]
    if kind not in available:
        raise ValueError(f"unknown --device {device!r}; use auto, cpu, cuda or mps")
    if not available[kind]:
        raise ValueError(f"--device {device!r} is not available on this machine; use --device cpu")
    return device


def _first_change(arm: Arm, steps: int, domains: tuple[str, str] = ("code", "prose")) -> int:
    """The step where the arm's mix first moves (the measures' switch); a constant arm
    is measured at the default window's start."""
    if arm.schedule is None:
        return arm.switch_steps(steps)[0]
    w = arm.mixture(steps, domains).weights_at(np.arange(steps))[:, 0]
    moved = np.flatnonzero(np.abs(np.diff(w)) > 1e-12)
    return int(moved[0]) + 1 if moved.size else steps


def _check_steps(cfg: RunConfig, arms: list[Arm]) -> None:
    """Refuse a run too short for the measures: before an arm's mix first moves they
    need the warm-up over plus five steps (the training loss's running mean) and three
    held-out evaluations (at steps 0, E and 2E)."""
    needed = max(cfg.warmup + 5, 2 * cfg.eval_every + 1)

    def shortest(arm: Arm) -> int:  # the first step count long enough (monotone)
        lo, hi = cfg.steps, 1 << 24
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if _first_change(arm, mid, cfg.domains) < needed else (lo, mid)
        return lo

    short = [arm for arm in arms if _first_change(arm, cfg.steps, cfg.domains) < needed]
    if short:
        arm = max(short, key=shortest)
        raise ValueError(
            f"--steps {cfg.steps} is too short: arm {arm.name!r} is measured from step "
            f"{_first_change(arm, cfg.steps, cfg.domains)} (where its mix moves), before the "
            f"{needed} steps "
            f"the measures need first ({cfg.warmup} warm-up steps + 5, three evaluations "
            f"{cfg.eval_every} steps apart); use --steps {shortest(arm)} or more"
        )


def _names(flag: str, given: str, known: tuple[str, ...] | dict) -> list[str]:
    names = [n.strip() for n in given.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{flag} is empty; give names from: {', '.join(known)}")
    return [_validate.choice(flag.removeprefix("--").rstrip("s"), n, known) for n in names]


def _sized(args: argparse.Namespace, quick: RunConfig, presets: dict) -> RunConfig:
    for flag in ("seeds", "steps", "jobs", "batch", "seq_len"):
        if getattr(args, flag) is not None:
            _validate.integer(f"--{flag.replace('_', '-')}", getattr(args, flag), minimum=1)
    if args.quick:
        return quick
    given = {k: getattr(args, k) for k in ("steps", "batch", "seq_len", "lr")}
    return replace(presets[args.preset], **{k: v for k, v in given.items() if v is not None})


def study(args: argparse.Namespace) -> int:
    """``annealmix demo --study midtrain``: design, train, report, plot."""
    from .midtrain import Study, design, pools, tree

    for flag in ("lr_schedule", "domains", "arms_config"):
        if getattr(args, flag) is not None:
            raise ValueError(
                f"--{flag.replace('_', '-')} does not apply to --study midtrain (its mixes and "
                "learning rates are the study's design); leave it out"
            )
    if args.from_results is not None:
        return _study_report(args.from_results, args.out)
    cfg = _sized(args, STUDY_QUICK, STUDY_PRESETS)
    arms = STUDY_ARMS if args.arms is None else tuple(_names("--arms", args.arms, STUDY_ARMS))
    spec = Study(run=cfg, arms=arms, seeds=1 if args.quick else args.seeds)
    runs = spec.runs()
    nodes = tree(runs, cfg.steps)
    plan = design(runs, cfg.batch)
    print(
        f"annealmix demo --study midtrain: {len(arms)} arms x {len(spec.endings)} decay endings "
        f"x {spec.seeds} seeds, {cfg.steps} steps of {cfg.batch} x {cfg.seq_len} bytes (decay: "
        f"the last {spec.decay_steps}), a {cfg.layers}-layer model of width {cfg.dim}; "
        f"{len(nodes)} shared segments, {sum(n.end - n.start for n in nodes) * spec.seeds:,} "
        f"steps in all (straight runs: {len(runs) * spec.seeds * cfg.steps:,})"
    )
    if args.dry_run:
        from .midtrain_train import available

        for d in plan:
            if d["ending"] != runs[0].ending:
                continue
            if d["online"]:
                start = next(r.online_from for r in runs if r.name == d["run"])
                print(f"  {d['arm']:8s} its controller's weights from step {start}")
                continue
            age = f"{d['mean_age']:.0f}" if d["math_samples"] else "-"
            print(
                f"  {d['arm']:8s} B samples {d['b_samples']:6.0f}   math samples "
                f"{d['math_samples']:6.0f}   mean age {age:>4s} steps   lambda at the end "
                f"{d['final_lambda']:.2f}"
            )
        for domain, (size, passes) in pools(runs, available(spec), cfg.batch).items():
            print(f"  pool {domain}: {size:,} windows, read at most {passes} time(s) by any arm")
        for n in nodes:
            print(
                f"  segment {n.id}: steps {n.start}-{n.end} for "
                f"{', '.join(runs[i].name for i in n.runs)}"
            )
        return 0
    spec = replace(spec, run=replace(cfg, device=_device(args.device)))
    from .midtrain_plots import publish  # matplotlib only when plotting
    from .midtrain_train import run_study

    started = time.perf_counter()
    records = run_study(spec, max(1, args.jobs))
    print()
    publish(plan, records, args.out)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _study_report(path: Path, out: Path) -> int:
    """The report and figures of a saved study (its results.json), without training."""
    import json

    from .midtrain_plots import publish

    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--from-results {path}: cannot read it as JSON ({err})") from None
    missing = [k for k in ("design", "runs") if not isinstance(saved, dict) or k not in saved]
    if missing or not saved["runs"]:
        raise ValueError(
            f"--from-results {path} has no {missing[0] if missing else 'runs'}: give the "
            "results.json that annealmix demo --study midtrain wrote"
        )
    publish(saved["design"], saved["runs"], out)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.study is not None:
        return study(args)
    for flag in ("dry_run", "from_results"):
        if getattr(args, flag):
            raise ValueError(
                f"--{flag.replace('_', '-')} needs --study midtrain (the default demo has no "
                "study to design or report)"
            )
    cfg = _sized(args, QUICK, PRESETS)
    schedules = tuple(
        s.strip()
        for s in ("constant" if args.lr_schedule is None else args.lr_schedule).split(",")
        if s.strip()
    )
    if not schedules:
        raise ValueError(f"--lr-schedule is empty; give one or more of {', '.join(LR_SCHEDULES)}")
    for lr in schedules:
        _validate.choice("--lr-schedule", lr, LR_SCHEDULES)
    if len(set(schedules)) != len(schedules):
        raise ValueError(f"--lr-schedule names a schedule twice: {args.lr_schedule!r}")
    domains = tuple(
        d.strip()
        for d in ("code,prose" if args.domains is None else args.domains).split(",")
        if d.strip()
    )
    if len(domains) != 2 or domains[0] == domains[1]:
        raise ValueError(f"--domains must name two different domains, got {args.domains!r}")
    for domain in domains:
        _validate.choice("domain", domain, DOMAINS)
    cfg = replace(cfg, lr_schedule=schedules[0], domains=domains)
    seeds = 1 if args.quick else args.seeds
    if args.arms_config is not None:
        arms = load_arms(args.arms_config)
    else:
        arms = [
            ARMS[n]
            for n in _names(
                "--arms", ",".join(DEFAULT_ARMS) if args.arms is None else args.arms, ARMS
            )
        ]
    cfg = replace(cfg, device=_device(args.device))
    _check_steps(cfg, arms)
    print(
        f"annealmix demo: {len(arms)} arms x {seeds} seeds, {cfg.steps} steps of "
        f"{cfg.batch} x {cfg.seq_len} bytes, lr {cfg.lr} ({', '.join(schedules)}), "
        f"{args.jobs} at a time on {cfg.device}"
    )
    started = time.perf_counter()
    records = run(arms, seeds, cfg, max(1, args.jobs), schedules)
    rows = summarise(records)
    from .report import leaderboard

    print()
    print(
        f"ranked by final mean held-out loss over {' and '.join(cfg.domains)} (lower is better); "
        f"mean ± std over {seeds} seed(s)"
    )
    print(leaderboard(rows))
    written = write_outputs(records, rows, args.out)
    from .plots import plot_all  # matplotlib only when plotting

    written += plot_all(records, args.out)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0
