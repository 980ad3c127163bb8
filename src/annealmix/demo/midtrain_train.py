"""The mid-training study's training: one node of the tree per call, and the runner
that walks every seed's tree with a pool of processes.

A node continues from its parent's checkpoint (model, AdamW, the loader's state,
the online controller's, the curves so far) or starts from the seed's
initialization, trains its steps with the plan of the first of its runs (they all
do the same over these steps), and leaves a checkpoint for its children, or, a
leaf, the finished record of each of its runs. Held-out measures are taken every
``eval_every`` steps on fixed windows of each domain: loss (nats per byte),
next-byte accuracy, and on arithmetic the answers' accuracy (the bytes after
``=``, the line's newline included, each predicted from the true bytes before it)
and their exact match (every byte of the answer right: what greedy decoding would
write).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._progress import Progress
from ..controllers import LossProportional
from ..online import online
from ..plan import Plan
from ..shard import Shard
from ..sources import TokenWindows
from ..torch import MixtureDataLoader, SourceLosses
from .data import domain_bytes, split
from .midtrain import DOMAINS, TARGET, Node, Run, Study, mixture, pools, tree
from .model import GPT, GPTConfig

__all__ = ["answer_spans", "run_study", "train_node"]

UPDATE_EVERY = 10  # the online arm's steps between controller updates


def answer_spans(windows: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, first, last + 1) target positions of every arithmetic answer whose whole
    line lies in the window: the bytes after ``"= "`` through the newline (a target
    position j predicts byte j + 1)."""
    spans = []
    for row, window in enumerate(windows):
        text = np.asarray(window, dtype=np.uint8).tobytes()
        start = text.find(b"\n") + 1
        while start:
            eq, nl = text.find(b"= ", start), text.find(b"\n", start)
            if nl < 0 or eq < 0 or eq > nl:
                break
            spans.append((row, eq + 1, nl))
            start = nl + 1
    return spans


@functools.cache
def _data(max_bytes: int, seq_len: int, eval_samples: int) -> tuple[dict, dict, list]:
    """Each domain's training windows and fixed held-out windows (cached per process)."""
    train, held = {}, {}
    for name in DOMAINS:
        tr, ho = split(domain_bytes(name, max_bytes))
        train[name] = tr
        windows = TokenWindows(ho, seq_len)
        pick = np.linspace(0, len(windows) - 1, min(eval_samples, len(windows))).astype(int)
        held[name] = np.stack([windows[i] for i in pick])
    return train, held, answer_spans(held[TARGET])


def available(study: Study) -> dict[str, int]:
    """Training windows per domain."""
    run = study.run
    train, _, _ = _data(run.max_bytes, run.seq_len, run.eval_samples)
    return {d: len(TokenWindows(t, run.seq_len)) for d, t in train.items()}


@torch.no_grad()
def evaluate(model: GPT, held: dict[str, torch.Tensor], spans: list, device: str) -> dict:
    model.eval()
    out = {}
    for name, x in held.items():
        x = x.to(device)
        logits = model(x[:, :-1])
        y = x[:, 1:]
        out[f"loss_{name}"] = F.cross_entropy(logits.transpose(1, 2), y).item()
        right = (logits.argmax(-1) == y).cpu().numpy()
        out[f"acc_{name}"] = float(right.mean())
        if name == TARGET:
            answers = [right[r, a:b] for r, a, b in spans]
            out["answer_acc"] = float(np.concatenate(answers).mean()) if answers else np.nan
            out["exact"] = float(np.mean([a.all() for a in answers])) if answers else np.nan
    model.train()
    return out


def _plan(study: Study, run: Run, seed: int, sizes: dict[str, int], step: int) -> Plan:
    steps = study.run.steps
    plan = Plan(
        mixture(run.arm, steps, study.decay_steps),
        global_batch_size=study.run.batch,
        seed=seed,
        sizes=sizes,
    )
    return online(plan) if run.online_at(step) else plan


def _controller(run: Run, pool: dict[str, tuple[int, int]], batch: int, delay: int):
    """The online arm's controller: loss-proportional, at least 5% per domain, at most
    10% moved per update, and no domain read more often than the pools allow (it
    stops a domain while a whole update window, drawn from it alone, still fits)."""
    spare = (UPDATE_EVERY + delay + 1) * batch
    caps = {d: passes - spare / size for d, (size, passes) in pool.items()}
    short = [d for d, cap in caps.items() if cap <= 0]
    if short:
        raise ValueError(
            f"the online arm's {short[0]} pool ({pool[short[0]][0]} windows) is smaller than "
            f"one controller window ({spare} samples); use a smaller --batch or a shorter "
            "--seq-len (more windows per domain)"
        )
    return LossProportional(DOMAINS, floor=0.05, max_change=0.1, max_epochs=caps)


def train_node(
    study: Study,
    seed: int,
    node: Node,
    parent: Path | None,
    save: Path | None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Train ``node`` for ``seed``; write its checkpoint to ``save`` (a node with
    children) and return the finished records of its runs (a leaf), else []."""
    cfg, runs = study.run, study.runs()
    run = runs[node.runs[0]]
    steps, batch, device = cfg.steps, cfg.batch, cfg.device
    train, held_np, spans = _data(cfg.max_bytes, cfg.seq_len, cfg.eval_samples)
    pool = pools(runs, available(study), batch)
    sources = {
        d: TokenWindows(train[d][: pool[d][0] * cfg.seq_len + 1], cfg.seq_len) for d in DOMAINS
    }
    sizes = {d: len(s) for d, s in sources.items()}
    held = {d: torch.from_numpy(x) for d, x in held_np.items()}
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(seq_len=cfg.seq_len, num_layers=cfg.layers, num_heads=cfg.heads, dim=cfg.dim)
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    shard = Shard(global_batch_size=batch)

    def loader_at(step: int, state: dict | None, replan: bool) -> MixtureDataLoader:
        made = MixtureDataLoader(
            sources, _plan(study, run, seed, sizes, step), shard, num_steps=steps
        )
        if state is not None:
            made.load_state_dict(state, replan=replan)
        return made

    controller = tracker = None
    if parent is None:
        rec: dict[str, Any] = {"eval_step": [], "train_loss": [], "lr": []}
        rec |= {f"weight_{d}": [] for d in DOMAINS} | {f"count_{d}": [] for d in DOMAINS}
        loader = loader_at(0, None, False)
    else:
        saved = torch.load(parent, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        rec = saved["record"]
        same = saved["arm"] == run.arm and saved["online"] == run.online_at(node.start)
        loader = loader_at(node.start, saved["loader"], replan=not same)
        if saved["controller"] is not None:
            controller = _controller(run, pool, batch, loader.commit_delay)
            controller.load_state_dict(saved["controller"])
            tracker = SourceLosses(DOMAINS)
            tracker.load_state_dict(saved["tracker"])
    batches = iter(loader)
    started = time.perf_counter()
    for step in range(node.start, node.end):
        if step == run.online_from:  # the controller takes over from the schedule
            if step > node.start:  # (a node that starts here has the online plan)
                loader = loader_at(step, loader.state_dict(), replan=True)
                batches = iter(loader)
            controller = _controller(run, pool, batch, loader.commit_delay)
            tracker = SourceLosses(DOMAINS)
        if step % cfg.eval_every == 0:
            rec["eval_step"].append(step)
            for key, value in evaluate(model, held, spans, device).items():
                rec.setdefault(key, []).append(value)
        lr = float(run.lr[step])
        for group in opt.param_groups:
            group["lr"] = lr
        b = next(batches)
        x = b["sample"].to(device)
        logits = model(x[:, :-1])
        per_sample = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").mean(1)
        loss = per_sample.mean()
        loss.backward()
        if tracker is not None:
            tracker.add(per_sample, b["source"])
            if (step + 1 - run.online_from) % UPDATE_EVERY == 0 and step + 1 < steps:
                drawn = loader.consumed
                epochs = {d: float(drawn[k]) / sizes[d] for k, d in enumerate(DOMAINS)}
                at = loader.step + loader.commit_delay
                loader.commit(
                    controller.update(tracker.reduce(), loader.weights_at(step + 1), epochs=epochs),
                    step=at,
                )
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rec["train_loss"].append(loss.item())
        rec["lr"].append(lr)
        counts = np.bincount(b["source"].numpy(), minlength=len(DOMAINS))
        for k, (d, w) in enumerate(zip(DOMAINS, loader.weights_at(step))):
            rec[f"weight_{d}"].append(float(w))
            rec[f"count_{d}"].append(int(counts[k]))
        if progress is not None and (step + 1 - node.start) % cfg.eval_every == 0:
            progress.put(cfg.eval_every)
    if progress is not None:
        progress.put((node.end - node.start) % cfg.eval_every)
    rec.setdefault("seconds", 0.0)
    rec["seconds"] += time.perf_counter() - started
    if save is not None:
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "record": rec,
                "loader": loader.state_dict(),
                "arm": run.arm,
                "online": run.online_at(node.end - 1),
                "controller": None if controller is None else controller.state_dict(),
                "tracker": None if tracker is None else tracker.state_dict(),
            },
            save,
        )
        return []
    rec["eval_step"].append(steps)
    for key, value in evaluate(model, held, spans, device).items():
        rec[key].append(value)
    drawn = loader.consumed
    rec["samples"] = {d: int(drawn[k]) for k, d in enumerate(DOMAINS)}
    rec["pools"] = {d: size for d, (size, _) in pool.items()}
    rec["passes"] = {d: -(-rec["samples"][d] // sizes[d]) for d in DOMAINS}
    if controller is not None:
        rec["log"] = loader.log.to_list()
    out = []
    for i in node.runs:
        r = runs[i]
        meta = {
            "arm": r.arm,
            "ending": r.ending,
            "run": r.name,
            "seed": seed,
            "config": asdict(study.config(r.ending)) | {"domains": list(DOMAINS)},
            "decay_steps": study.decay_steps,
        }
        out.append(meta | rec)
    return out


def _job(study: Study, seed: int, node: Node, parent, save, queue) -> list[dict[str, Any]]:
    torch.set_num_threads(1)  # one core per process; the nodes go in parallel instead
    return train_node(study, seed, node, parent, save, queue)


def run_study(study: Study, jobs: int) -> list[dict[str, Any]]:
    """Train every run of ``study`` with every seed, each shared segment once per
    seed, ``jobs`` processes at a time; the records in (ending, arm, seed) order."""
    runs = study.runs()
    pools(runs, available(study), study.run.batch)  # refuse a size before any training
    nodes = tree(runs, study.run.steps)
    total = study.seeds * sum(n.end - n.start for n in nodes)
    bar, done = Progress(total, "steps", delay=0.0), 0
    records: dict[tuple[str, int], dict[str, Any]] = {}
    ctx = mp.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="annealmix-midtrain-") as tmp,
        ctx.Manager() as manager,
        ProcessPoolExecutor(jobs, mp_context=ctx) as pool,
    ):
        queue = manager.Queue()

        def submit(seed: int, node: Node) -> Any:
            parent = None if node.parent is None else Path(tmp, f"{seed}-{node.parent}.pt")
            save = Path(tmp, f"{seed}-{node.id}.pt") if node.children else None
            return pool.submit(_job, study, seed, node, parent, save, queue)

        pending = {
            submit(s, n): (s, n) for s in range(study.seeds) for n in nodes if n.parent is None
        }
        waiting: dict[tuple[int, int], int] = {}  # children of a node still training
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while not queue.empty():
                done += queue.get()
            bar.update(done)
            for future in finished:
                seed, node = pending.pop(future)
                for rec in future.result():
                    records[(rec["run"], seed)] = rec
                for child in node.children:
                    pending[submit(seed, nodes[child])] = (seed, nodes[child])
                waiting[(seed, node.id)] = len(node.children)
                if node.parent is not None:  # a checkpoint goes once its children are done
                    waiting[(seed, node.parent)] -= 1
                    if not waiting[(seed, node.parent)]:
                        Path(tmp, f"{seed}-{node.parent}.pt").unlink()
        bar.close()
    return [records[(r.name, s)] for r in runs for s in range(study.seeds)]
