"""One demo run: train the small GPT on one arm's mix with one seed, and record it.

The run uses annealmix end to end: the arm's ``Mixture`` -> a ``Plan`` -> a
``MixtureDataLoader`` over ``TokenWindows`` of each domain's training bytes, and
the loader's metrics for the realized mix. Held-out loss on each domain is taken
every ``eval_every`` steps on fixed held-out samples; the gradient norm every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..controllers import LossProportional
from ..online import online
from ..plan import Plan
from ..shard import Shard
from ..sources import TokenWindows
from ..torch import MixtureDataLoader, SourceLosses
from .arms import Arm
from .data import domain_bytes, split
from .model import GPT, GPTConfig, per_sample_loss
from .settings import RunConfig

__all__ = ["train_one"]


def _sources(cfg: RunConfig) -> tuple[dict[str, TokenWindows], dict[str, torch.Tensor]]:
    train, held = {}, {}
    for name in cfg.domains:
        tr, ho = split(domain_bytes(name, cfg.max_bytes))
        train[name] = TokenWindows(tr, cfg.seq_len)
        windows = TokenWindows(ho, cfg.seq_len)
        # Fixed held-out samples, evenly spaced through the held-out bytes.
        pick = np.linspace(0, len(windows) - 1, min(cfg.eval_samples, len(windows))).astype(int)
        held[name] = torch.from_numpy(np.stack([windows[i] for i in pick]))
    return train, held


def _flat_grad(model: GPT) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))


def _alignment(model: GPT, held: dict[str, torch.Tensor], device: str, rows: int = 16) -> float:
    """Cosine between the gradients of the two domains' held-out losses (first ``rows``
    samples each): do the domains pull the weights the same way? (``.grad`` untouched.)"""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for x in held.values():
        loss = per_sample_loss(model, x[:rows].to(device)).mean()
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return _cosine(*grads)


def _second_moment_ratio(opt: torch.optim.Optimizer, model: GPT) -> float:
    """Mean squared gradient over AdamW's bias-corrected second moment, before the
    step: 1 when the gradients are as large as Adam expects, far above after a
    shift it has not seen (NaN before the first step)."""
    num, den = [], []  # summed on the device, read once (one sync per step on a GPU)
    for group in opt.param_groups:
        beta2 = group["betas"][1]
        for p in group["params"]:
            state = opt.state.get(p)
            if p.grad is None or not state or "exp_avg_sq" not in state:
                return float("nan")
            num.append(p.grad.pow(2).sum())
            den.append(state["exp_avg_sq"].sum() / (1 - beta2 ** float(state["step"])))
    ratio = float(torch.stack(num).sum() / torch.stack(den).sum())
    return ratio if math.isfinite(ratio) else float("nan")


@torch.no_grad()
def _evaluate(model: GPT, held: dict[str, torch.Tensor], device: str) -> dict[str, float]:
    model.eval()
    out = {n: per_sample_loss(model, x.to(device)).mean().item() for n, x in held.items()}
    model.train()
    return out


def train_one(arm: Arm, seed: int, cfg: RunConfig, progress: Any = None) -> dict[str, Any]:
    """Train one arm with one seed; return its curves and counts as plain data.

    ``progress`` (a queue) receives the number of steps done, now and then.
    """
    torch.manual_seed(seed)
    train, held = _sources(cfg)
    mixture = arm.mixture(cfg.steps, cfg.domains)
    plan = Plan(
        mixture,
        global_batch_size=cfg.batch,
        seed=seed,
        sizes={n: len(s) for n, s in train.items()},
    )
    controller = tracker = None
    if arm.online is not None:  # the move, tilted by what the domains' losses say
        plan = online(plan)
        controller = LossProportional(plan.mixture.sources, floor=0.05, max_change=0.1)
        tracker = SourceLosses(plan.mixture.sources)
    loader = MixtureDataLoader(train, plan, Shard(global_batch_size=cfg.batch), num_steps=cfg.steps)
    model = GPT(
        GPTConfig(seq_len=cfg.seq_len, num_layers=cfg.layers, num_heads=cfg.heads, dim=cfg.dim)
    ).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    rec: dict[str, Any] = {"arm": arm.name, "seed": seed, "config": asdict(cfg)}
    rec["switch"] = list(arm.switch_steps(cfg.steps)) if arm.schedule is not None else None
    old, new = cfg.domains  # curves are named by domain: eval_code, weight_code, ...
    curves = {k: [] for k in ("eval_step", f"eval_{old}", f"eval_{new}", "train_loss",
                              "grad_norm")}  # fmt: skip
    curves |= {f"weight_{old}": [], f"share_{old}": [], "lr": []}
    curves |= {"grad_cos": [], "v_ratio": [], "align": []}
    previous = None  # the last step's gradient, for the change of direction
    samples = dict.fromkeys(cfg.domains, 0)
    tokens, elapsed, count_error = 0, 0.0, 0.0
    for step, batch in enumerate(loader):
        if step % cfg.eval_every == 0:
            losses = _evaluate(model, held, cfg.device)
            curves["eval_step"].append(step)
            curves[f"eval_{old}"].append(losses[old])
            curves[f"eval_{new}"].append(losses[new])
            curves["align"].append(_alignment(model, held, cfg.device))
        start = time.perf_counter()
        lr = cfg.learning_rate(step)
        for group in opt.param_groups:
            group["lr"] = lr
        per_sample = per_sample_loss(model, batch["sample"].to(cfg.device))
        loss = per_sample.mean()
        loss.backward()
        if tracker is not None:
            tracker.add(per_sample, batch["source"])
            if (step + 1) % arm.update_every == 0 and step + 1 < cfg.steps:
                proposal = controller.update(tracker.reduce(), loader.weights_at(step + 1))
                # The update takes effect commit_delay steps on; a tilt cannot give
                # weight to a domain the schedule holds at 0 there, so propose none.
                at = loader.step + loader.commit_delay
                off = loader.plan.mixture.weights_at(at) == 0
                weights = {k: 0.0 if o else w for (k, w), o in zip(proposal.items(), off)}
                loader.commit(weights, step=at)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        grad = _flat_grad(model)
        curves["grad_cos"].append(float("nan") if previous is None else _cosine(grad, previous))
        curves["v_ratio"].append(_second_moment_ratio(opt, model))
        previous = grad.clone()
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed += time.perf_counter() - start
        tokens += batch["sample"].shape[0] * cfg.seq_len
        metrics = loader.metrics(step)
        curves["train_loss"].append(loss.item())
        curves["grad_norm"].append(norm.item())
        curves[f"weight_{old}"].append(metrics[f"mix/weight/{old}"])
        curves[f"share_{old}"].append(metrics[f"mix/share/{old}"])
        curves["lr"].append(lr)
        target = plan.targets(step) if controller is None else None  # online: at the end
        for k, name in enumerate(plan.mixture.sources):
            samples[name] = int(metrics[f"mix/samples/{name}"])
            if target is not None:
                count_error = max(count_error, abs(samples[name] - float(target[k])))
        if progress is not None and (step + 1) % cfg.eval_every == 0:
            progress.put(cfg.eval_every)
    final = _evaluate(model, held, cfg.device)
    curves["eval_step"].append(cfg.steps)
    curves[f"eval_{old}"].append(final[old])
    curves[f"eval_{new}"].append(final[new])
    plan, log = loader.plan, loader.log
    targets = plan.targets(cfg.steps - 1, log=log)
    if controller is not None:  # the realized weights' targets, against the final log
        counts = np.cumsum(plan.counts(0, cfg.steps, log=log), axis=0)
        realized = cfg.batch * np.cumsum(loader.weights_at(np.arange(cfg.steps)), axis=0)
        count_error = float(np.abs(counts - realized).max())
        rec["log"] = log.to_list()
    rec |= curves
    rec["samples"] = samples
    rec["target_samples"] = dict(zip(plan.mixture.sources, targets.tolist()))
    rec["max_count_error"] = count_error  # realized vs scheduled cumulative samples
    rec["tokens_per_s"] = tokens / elapsed if elapsed else float("nan")
    return rec
