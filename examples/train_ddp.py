"""Train a small byte-level causal LM with DDP (gloo, CPU) on an annealed data mix.

    torchrun --standalone --nproc-per-node 2 examples/train_ddp.py \
        --steps 200 --ckpt-dir runs/ddp --audit runs/ddp/audit.txt

The mix starts as 90% standard-library code / 10% reference-manual prose and
cosine-anneals to 10/90 (``--end-code``) over the middle half of training. Every ``--ckpt-every``
steps rank 0 saves model, optimizer and data state; a relaunch resumes from the
last checkpoint, on any number of ranks; with ``--replan`` a changed mix takes
over from there, each source continuing from its saved count. ``--audit FILE`` appends one
``step rank source index`` line per sample consumed (a resume first drops the lines
of steps the checkpoint does not hold), so two runs can be compared sample by sample.

With ``--online loss|doremi|exp3`` the mix also learns: every ``--update-every`` steps
the per-source losses, summed over the ranks, go to a controller whose weights tilt
the schedule from a step every rank agrees on; the weight log and the controller's
state are in the checkpoint, so a resumed run replays the same mix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from annealmix import Mixture, Phase, Plan
from annealmix.controllers import EXP3, DoReMi, LossProportional
from annealmix.demo.data import domain_bytes, split
from annealmix.demo.model import GPT, GPTConfig, per_sample_loss
from annealmix.metrics import rank_counts
from annealmix.online import OnlinePlan
from annealmix.sources import TokenWindows
from annealmix.torch import (
    MixtureDataLoader,
    SourceLosses,
    all_reduce_metrics,
    loss_by_source,
    resolve_shard,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps")
    p.add_argument("--global-batch", type=int, default=16, help="samples per step, all ranks")
    p.add_argument("--micro-batches", type=int, default=1, help="accumulation steps per rank")
    p.add_argument("--seq-len", type=int, default=64, help="tokens (bytes) per sample")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (constant)")
    p.add_argument("--seed", type=int, default=0, help="plan and model seed")
    p.add_argument("--ckpt-dir", type=Path, default=Path("runs/ddp"), help="checkpoint folder")
    p.add_argument("--ckpt-every", type=int, default=10, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--audit", type=Path, help="append 'step rank source index' lines here")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per rank")
    p.add_argument(
        "--end-code", type=float, default=0.1, help="share of code the anneal ends at, in [0, 1]"
    )
    p.add_argument(
        "--replan",
        action="store_true",
        help="on resume, accept a changed mix (e.g. --end-code) from the checkpoint's step on",
    )
    p.add_argument(
        "--online",
        choices=("none", "loss", "doremi", "exp3"),
        default="none",
        help="learn the mix online with this controller (its tilt rides the schedule)",
    )
    p.add_argument("--update-every", type=int, default=5, help="steps between online updates")
    p.add_argument(
        "--crash-at-step",
        type=int,
        help="testing aid: SIGKILL the whole job when this step starts (a node failure)",
    )
    return p.parse_args()


def build_plan(args: argparse.Namespace, sources: dict) -> Plan:
    a, b = args.steps // 4, 3 * args.steps // 4
    mixture = Mixture(
        weights={"code": 0.9, "prose": 0.1},
        phases=[
            Phase(
                start_step=a,
                end_step=b,
                weights={"code": args.end_code, "prose": 1.0 - args.end_code},
                schedule="cosine",
            )
        ],
    )
    sizes = {name: len(s) for name, s in sources.items()}
    kind = OnlinePlan if args.online != "none" else Plan
    return kind(mixture, global_batch_size=args.global_batch, seed=args.seed, sizes=sizes)


def build_controller(kind: str, names: tuple[str, ...]):
    guards = {"floor": 0.05, "max_change": 0.2}
    if kind == "loss":
        return LossProportional(names, **guards)
    if kind == "doremi":  # excess over a target loss of 2.0 nats per byte
        return DoReMi(names, reference=dict.fromkeys(names, 2.0), step_size=0.5, **guards)
    return EXP3(names, **guards)


def save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a torn checkpoint


def main() -> None:
    args = parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    sources = {
        name: TokenWindows(split(domain_bytes(name, 1 << 20))[0], args.seq_len)
        for name in ("code", "prose")
    }
    plan = build_plan(args, sources)
    shard = resolve_shard(args.global_batch, micro_batches=args.micro_batches)
    loader = MixtureDataLoader(
        sources, plan, shard, num_steps=args.steps, num_workers=args.num_workers
    )
    names = plan.mixture.sources
    controller = None if args.online == "none" else build_controller(args.online, names)
    tracker = SourceLosses(names)
    model = DDP(GPT(GPTConfig(seq_len=args.seq_len, num_layers=2, dim=64)))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    ckpt = args.ckpt_dir / "last.pt"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"], replan=args.replan)
        if controller is not None:
            controller.load_state_dict(state["controller"])
            tracker.load_state_dict(state["losses"])
        step = state["data"]["step"]
        if rank == 0:
            print(f"resumed at step {step} on {world} rank(s) from {ckpt}", flush=True)
    if args.audit and rank == 0:  # forget what the lost steps consumed
        args.audit.parent.mkdir(parents=True, exist_ok=True)
        lines = args.audit.read_text().splitlines(True) if args.audit.exists() else []
        args.audit.write_text("".join(x for x in lines if int(x.split()[0]) < step))
    dist.barrier()

    batches = iter(loader)
    t0 = time.perf_counter()
    while step < args.steps:
        if args.crash_at_step == step:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        opt.zero_grad(set_to_none=True)
        seen, losses = [], []
        for micro in range(args.micro_batches):
            batch = next(batches)
            last = micro == args.micro_batches - 1  # gradients all-reduce on the last only
            with contextlib.nullcontext() if last else model.no_sync():
                per_sample = per_sample_loss(model, batch["sample"])
                (per_sample.mean() / args.micro_batches).backward()
            seen.append(batch)
            losses.append(per_sample.detach())
            tracker.add(per_sample, batch["source"])
        opt.step()
        if args.audit:
            lines = "".join(
                f"{step} {rank} {names[s]} {i}\n"
                for b in seen
                for s, i in zip(b["source"].tolist(), b["index"].tolist())
            )
            with open(args.audit, "a") as f:  # one append per rank and step
                f.write(lines)
        step += 1
        if controller is not None and step % args.update_every == 0:
            # the same all-reduced means on every rank: the same weights, the same step
            weights = controller.update(tracker.reduce(), loader.weights_at(step))
            loader.commit(weights)
        if step % args.log_every == 0 or step == args.steps:
            sources_seen = torch.cat([b["source"] for b in seen]).numpy()
            logs = loader.metrics(step - 1, tokens_per_sample={n: args.seq_len for n in names})
            logs |= all_reduce_metrics(rank_counts(sources_seen, names))
            by_source = loss_by_source(torch.cat(losses), torch.from_numpy(sources_seen), names)
            logs |= {f"loss/{n}": v.item() for n, v in by_source.items()}
            if rank == 0:
                rate = step / (time.perf_counter() - t0)
                print(json.dumps({"step": step, "steps_per_s": round(rate, 2), **logs}), flush=True)
        if step % args.ckpt_every == 0 or step == args.steps:
            online = {} if controller is None else {
                "controller": controller.state_dict(),
                "losses": tracker.state_dict(),  # a collective: every rank calls it
            }  # fmt: skip
            if rank == 0:
                args.ckpt_dir.mkdir(parents=True, exist_ok=True)
                state = {
                    "model": model.module.state_dict(),
                    "optimizer": opt.state_dict(),
                    "data": loader.state_dict(),
                    **online,
                }
                save(ckpt, state)
            dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
