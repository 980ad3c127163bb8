"""The Hugging Face Trainer itself (a tiny GPT-2 from a config, on CPU) on a plan."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
datasets = pytest.importorskip("datasets")

from annealmix import Mixture, Phase, Plan  # noqa: E402
from annealmix.hf import mix_datasets, validation_set  # noqa: E402
from annealmix.torch.trainer import MixtureTrainer  # noqa: E402

STEPS, B, SEQ = 12, 8, 16


def rows(rng, low, n):  # each source's tokens in its own range of the vocabulary
    ids = rng.integers(low, low + 30, (n, SEQ)).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})


def setup():
    rng = np.random.default_rng(0)

    sources = {"code": rows(rng, 1, 200), "prose": rows(rng, 33, 200)}
    target = {"code": 0.1, "prose": 0.9}
    mix = Mixture(weights={"code": 0.9, "prose": 0.1},
                  phases=[Phase(start_step=3, end_step=8, weights=target)])  # fmt: skip
    plan = Plan(mix, global_batch_size=B, sizes={n: len(d) for n, d in sources.items()})
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=SEQ, n_embd=32, n_layer=1, n_head=2))  # fmt: skip
    return plan, mix_datasets(sources, plan, num_steps=STEPS), model


def arguments(tmp_path, **kw):
    kw = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, **kw}
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, logging_steps=3, report_to=[],
        save_strategy="no", use_cpu=True, learning_rate=1e-3, seed=0, **kw)  # fmt: skip


def test_the_trainer_follows_the_schedule_and_logs_each_sources_loss(tmp_path):
    plan, train, model = setup()
    seen = []

    class Recording(MixtureTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.append(inputs["source"].tolist())
            return super().compute_loss(model, inputs, *args, **kwargs)

    trainer = Recording(plan=plan, model=model, train_dataset=train,
                        args=arguments(tmp_path, train_sampling_strategy="sequential"))  # fmt: skip
    trainer.train()
    # each optimizer step (two micro-batches of 4) holds exactly the plan's step
    per_step = np.array(seen).reshape(STEPS, B)
    counts = np.stack([np.bincount(row, minlength=2) for row in per_step])
    assert np.array_equal(counts, plan.counts(0, STEPS))
    assert counts[0].tolist() == [7, 1] and counts[-1].tolist() == [1, 7]  # annealed
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == STEPS // 3
    last = logged[-1]
    assert last["mix/weight/prose"] == pytest.approx(0.9)
    assert {"mix/loss/code", "mix/loss/prose", "mix/loss_ema/code"} <= set(last)
    assert all(np.isfinite(last[f"mix/loss/{n}"]) for n in ("code", "prose"))


def test_a_shuffling_trainer_is_refused_and_would_lose_the_anneal(tmp_path):
    plan, train, model = setup()
    with pytest.raises(ValueError, match=r"in 'random' order: .*\(train_sampling_strategy="):
        MixtureTrainer(plan=plan, model=model, train_dataset=train, args=arguments(tmp_path))
    # What the guard prevents: the Trainer's own order, drawn from the whole run.
    plain = transformers.Trainer(model=model, train_dataset=train, args=arguments(tmp_path))
    order = [train["source"][i] for i in plain._get_train_sampler()]
    first = np.bincount(np.array(order[: 3 * B]), minlength=2)  # the first three steps
    assert first[1] > 3 * B * 0.3  # prose, 10% of those steps in the plan, far above it
    # the iterable form keeps the order without a sampler
    MixtureTrainer(plan=plan, model=model, train_dataset=train.to_iterable_dataset(),
                   args=arguments(tmp_path))  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"per_device_train_batch_size": 2}, r"per_device_train_batch_size 2 x 1 rank\(s\) x "
                                             r"gradient_accumulation_steps 2 = 4 samples, but the "
                                             r"plan's global batch is 8"),
        ({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
          "train_sampling_strategy": "group_by_length"}, "in 'group_by_length' order"),
    ],
)  # fmt: skip
def test_a_trainer_off_the_plan_says_why(tmp_path, kw, message):
    plan, train, model = setup()
    with pytest.raises(ValueError, match=message):
        MixtureTrainer(plan=plan, model=model, train_dataset=train, args=arguments(tmp_path, **kw))
    with pytest.raises(ValueError, match="the train set has no 'source' column"):
        MixtureTrainer(plan=plan, model=model, train_dataset=train.remove_columns("source"),
                       args=arguments(tmp_path, train_sampling_strategy="sequential"))  # fmt: skip


def test_an_evaluation_reports_each_sources_held_out_loss(tmp_path):
    plan, train, model = setup()
    rng = np.random.default_rng(1)
    held = {"code": rows(rng, 1, 12), "prose": rows(rng, 33, 20)}
    trainer = MixtureTrainer(plan=plan, model=model, train_dataset=train,
                             eval_dataset=validation_set(held, plan),
                             args=arguments(tmp_path, train_sampling_strategy="sequential",
                                            per_device_eval_batch_size=5))  # fmt: skip
    metrics = trainer.evaluate()
    model.eval()
    for name, data in held.items():  # each source's mean per-sample loss, computed here
        ids = torch.tensor(data["input_ids"])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[:, :-1]
        token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                  reduction="none")  # fmt: skip
        assert metrics[f"eval_loss/{name}"] == pytest.approx(token.mean(1).mean().item(), rel=1e-5)
    assert metrics["eval_loss/code"] != metrics["eval_loss/prose"]
    with pytest.raises(TypeError, match="a validation set is read whole"):
        validation_set({"code": held["code"].to_iterable_dataset()}, plan)
    with pytest.raises(ValueError, match="unknown source in datasets: 'math'"):
        validation_set({"math": held["code"]}, plan)
