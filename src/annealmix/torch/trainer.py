"""The Hugging Face ``Trainer`` on an annealmix plan.

``MixtureTrainer(plan=plan, model=..., args=..., train_dataset=mix_datasets(...))`` is
``transformers.Trainer`` kept on the plan:

- its train order is the plan's. The Trainer draws a map-style train set at random by
  default (``train_sampling_strategy="random"``, or grouped by length): each source keeps
  its share of the whole run, but every batch is a draw from all of it, and the anneal
  is gone without a word. That is refused when the trainer is built, naming the fix:
  ``TrainingArguments(train_sampling_strategy="sequential")`` or
  ``train_dataset=mixed.to_iterable_dataset()``;
- its optimizer step is the plan's step: ``per_device_train_batch_size`` x ranks x
  ``gradient_accumulation_steps`` must be the plan's global batch (refused otherwise,
  with the three numbers);
- the ``source`` column reaches it (the Trainer drops the columns its model's
  ``forward`` does not take; this one is kept, and taken out of the model's inputs),
  so each log carries each source's mean loss since the last (``mix/loss/<source>``,
  per-sample losses summed exactly over the ranks: ``SourceLosses``) beside the
  scheduled weights of that step (``mix/weight/<source>``); an evaluation on
  ``annealmix.hf.validation_set(...)`` (each source's held-out rows, tagged) adds each
  source's mean loss to its metrics (``eval_loss/<source>``).

The per-source loss is the causal language model's: each sample's mean token loss over
its labels (``-100`` left out), from the logits the model returns.
"""

from __future__ import annotations

from typing import Any

import datasets as hf
import torch
from transformers import Trainer
from transformers.trainer_utils import has_length

from ..plan import Plan
from .losses import SourceLosses

__all__ = ["MixtureTrainer"]


class MixtureTrainer(Trainer):
    """``transformers.Trainer`` on ``plan`` (see the module doc).

    Args:
        plan: the plan the train set follows (``annealmix.hf.mix_datasets``).
        source_column: the train set's column of source ids.
        *args, **kwargs: ``transformers.Trainer``'s.
    """

    def __init__(self, *args: Any, plan: Plan, source_column: str = "source", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plan, self.source_column = plan, source_column
        self.source_losses = SourceLosses(plan.mixture.sources)
        self.eval_losses = SourceLosses(plan.mixture.sources)
        _check(self.args, self.train_dataset, plan, source_column)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.source_column not in self._signature_columns:
            self._signature_columns.append(self.source_column)  # kept for the losses

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:  # fmt: skip
        sources = inputs.pop(self.source_column, None)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)  # fmt: skip
        if sources is not None:
            kept = self.source_losses if model.training else self.eval_losses
            kept.add(_per_sample(outputs.logits, inputs["labels"]), sources)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: Any = None,
                        ignore_keys: Any = None, metric_key_prefix: str = "eval",
                        ) -> Any:  # fmt: skip
        """The Trainer's evaluation, with each source's mean loss in its metrics
        (``eval_loss/<source>``) where the set has a source column
        (``annealmix.hf.validation_set``)."""
        self.eval_losses = SourceLosses(self.plan.mixture.sources)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only,
                                         ignore_keys, metric_key_prefix)  # fmt: skip
        self.eval_losses.reduce()
        output.metrics.update({f"{metric_key_prefix}_loss/{n}": v
                               for n, v in self.eval_losses.last.items()})  # fmt: skip
        return output

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log: every rank reaches it at the same step
            step = self.state.global_step
            weights = self.plan.mixture.weights_at(max(step - 1, 0))
            logs = {**logs, **{f"mix/weight/{n}": float(w)
                               for n, w in zip(self.plan.mixture.sources, weights)}}  # fmt: skip
            self.source_losses.reduce()
            logs |= self.source_losses.metrics()
        super().log(logs, *args, **kwargs)


def _check(args: Any, dataset: Any, plan: Plan, source_column: str) -> None:
    """The refusals of the module doc, each naming its fix."""
    per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    if per_step != plan.global_batch_size:
        raise ValueError(
            f"an optimizer step of this Trainer takes per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x {args.world_size} rank(s) x "
            f"gradient_accumulation_steps {args.gradient_accumulation_steps} = {per_step} "
            f"samples, but the plan's global batch is {plan.global_batch_size}: make them "
            "equal, or a step would mix parts of two of the plan's steps"
        )
    if dataset is None:
        raise ValueError("MixtureTrainer needs the train_dataset: mix_datasets(...) of the plan")
    if has_length(dataset) and args.train_sampling_strategy != "sequential":
        raise ValueError(
            f"the Trainer would draw this map-style train set in "
            f"{args.train_sampling_strategy!r} order: every batch a draw from the whole run, "
            "so the anneal would be lost; give TrainingArguments(train_sampling_strategy="
            "'sequential'), or train_dataset=mixed.to_iterable_dataset()"
        )
    named = isinstance(dataset, (hf.Dataset, hf.IterableDataset))
    columns = dataset.column_names if named else None
    if columns is not None and source_column not in columns:
        raise ValueError(
            f"the train set has no {source_column!r} column (columns: {columns}): give "
            "annealmix.hf.mix_datasets(...) of the plan, or name its column (source_column=)"
        )


def _per_sample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's mean next-token loss over its labels (``-100`` left out)."""
    shifted, targets = logits[:, :-1].detach().float(), labels[:, 1:].to(logits.device)
    token = torch.nn.functional.cross_entropy(
        shifted.transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )
    counted = (targets != -100).sum(dim=1).clamp(min=1)
    return token.sum(dim=1) / counted
