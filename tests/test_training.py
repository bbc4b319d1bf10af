"""The pieces of the training loop: EMA, schedule, evaluation, the time budget; and what the run layer adds
around it: signals, the start line, progress and the report."""

import json
import math
import re
import signal
import time

import pytest
import torch

import pixelmodels
from pixelmodels import checkpoint as ckpt
from pixelmodels.evaluation import evaluate
from pixelmodels.devices import resolve_device
from pixelmodels.app.runs import resolve_train_config
from pixelmodels.app.session import RunCallbacks, run_training, stop_rule
from pixelmodels.settings import MAX_COUNT
from pixelmodels.training import EMA, Callbacks, Trainer, lr_factor
from pixelmodels.config import DataConfig, RunConfig, TrainConfig
from pixelmodels.data import ImageDataset
from pixelmodels.errors import PixelModelsError

import faults
from formats import write_mnist


def test_ema_starts_from_the_initial_weights_and_averages():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for e, old, new in zip(ema.model.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.9 * old + 0.1 * new)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_preset_defaults_fill_only_what_is_not_given():
    cfg = resolve_train_config(TrainConfig(lr=1e-2), "gated-pixelcnn")
    assert cfg.lr == 1e-2 and cfg.lr_decay == 0.999995 and cfg.ema == 0.9995 and cfg.optimizer == "adam"
    with pytest.raises(PixelModelsError, match="--optimizer: expected adam or rmsprop, found 'sgd'"):
        resolve_train_config(TrainConfig(optimizer="sgd"), "pixelcnn")
    with pytest.raises(PixelModelsError, match="--ema"):
        resolve_train_config(TrainConfig(ema=1.5), "pixelcnn")


def test_device_errors_name_the_flag():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(PixelModelsError, match="--device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(PixelModelsError, match="no CUDA device"):
            resolve_device("cuda")


def test_evaluate_is_the_mean_of_per_image_bits_per_dim_over_batches():
    model = pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), n_bits=4, preset="tiny", n_classes=3)
    images = torch.randint(0, 16, (11, 1, 6, 6), dtype=torch.uint8)
    labels = torch.randint(0, 3, (11,))
    dataset = ImageDataset(images, labels, n_bits=4, n_classes=3)
    with torch.no_grad():
        direct = model.bits_per_dim(images, labels).double().mean().item()
    assert evaluate(model, dataset, batch_size=4) == pytest.approx(direct, rel=1e-6)
    with torch.no_grad():
        first = -model.log_prob(images[:5], labels[:5]).double().sum().item() / (5 * 36 * math.log(2))
    assert evaluate(model, dataset, batch_size=2, limit=5) == pytest.approx(first, rel=1e-6)


def bars(n: int, seed: int) -> ImageDataset:
    """1x8x8 2-bit images: background pixels 0 or 1 at random, one row of 3s at a random height."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    x[torch.arange(n), 0, torch.randint(0, 8, (n,), generator=g)] = 3
    return ImageDataset(x, torch.full((n,), -1), n_bits=2)


def tiny_trainer(out, n_train: int = 64, resume: bool = False, **train) -> Trainer:
    """A Trainer handed its objects directly: a tiny gated PixelCNN on ``bars``."""
    torch.manual_seed(0)
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 8, 8), n_bits=2, preset="tiny")
    cfg = resolve_train_config(TrainConfig(**{"batch_size": 16, "n_samples": 0, "device": "cpu", **train}),
                               "gated-pixelcnn")
    state = ckpt.load_state(out / ckpt.STATE) if resume else None
    return Trainer(RunConfig(model.config, DataConfig(), cfg), model, bars(n_train, 1), bars(256, 2), out,
                   state=state)


def test_ema_warm_up_makes_the_average_as_good_as_the_weights_after_a_hundred_steps(tmp_path):
    ratios = {}
    for warmup in (True, False):
        trainer = tiny_trainer(tmp_path / str(warmup), n_train=1600, max_steps=100, lr=0.01, ema=0.9995,
                               ema_warmup=warmup)
        ema_bpd = trainer.fit()["test_bpd"]
        ratios[warmup] = ema_bpd / evaluate(trainer.model, trainer.test_set)
    assert ratios[True] == pytest.approx(1.0, abs=0.02)
    assert ratios[False] > 1.5  # without warm-up, 0.9995 keeps the average near the initial weights


class FakeScaler:
    """GradScaler's interface without CUDA: with ``skip`` every step is skipped as for inf/NaN gradients
    (no optimizer step, and ``update()`` halves the scale), otherwise it steps at a constant scale."""

    def __init__(self, skip: bool):
        self.skip, self.value = skip, 2.0**16

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        if not self.skip:
            optimizer.step()

    def update(self):
        self.value /= 2 if self.skip else 1

    def get_scale(self) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"scale": self.value}


def test_a_step_the_fp16_scaler_skips_moves_neither_schedule_ema_nor_step_count(tmp_path):
    trainer = tiny_trainer(tmp_path, log_every=1, lr_decay=0.5)
    trainer.scaler = FakeScaler(skip=True)
    x, y, _ = trainer.batch(next(trainer.batches(0)))
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    ema = [p.detach().clone() for p in trainer.ema.model.parameters()]
    lr = trainer.sched.get_last_lr()[0]
    assert math.isfinite(trainer.train_step(x, y))
    assert (trainer.step, trainer.bad_steps, trainer.ema.updates) == (0, 0, 0)
    assert trainer.sched.get_last_lr()[0] == lr
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ema, trainer.ema.model.parameters()))
    trainer.scaler.skip = False
    trainer.train_step(x, y)
    assert (trainer.step, trainer.ema.updates) == (1, 1) and trainer.sched.get_last_lr()[0] == lr / 2
    assert not all(torch.equal(a, b) for a, b in zip(ema, trainer.ema.model.parameters()))
    # In the loop, skipped batches are used up (the epoch ends) while the step count stays.
    trainer.scaler.skip = True
    assert trainer.fit()["step"] == 1 and (trainer.epoch, trainer.step) == (1, 1)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("train_bpd" in r for r in log)
    saved = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert saved["scaler"] == {"scale": 2.0**16 / 2**5}  # five skips: the one above, the epoch's four batches


def test_the_ema_update_count_is_saved_and_an_old_state_without_it_assumes_one_per_step(tmp_path):
    tiny_trainer(tmp_path, max_steps=3).fit()
    path = tmp_path / "training_state.pt"
    state = torch.load(path, weights_only=True)
    assert state["ema_updates"] == state["step"] == 3
    state["ema_updates"] = 2
    torch.save(state, path)
    assert tiny_trainer(tmp_path, resume=True).ema.updates == 2
    del state["ema_updates"]
    torch.save(state, path)
    assert tiny_trainer(tmp_path, resume=True).ema.updates == 3


def test_metrics_are_strict_json_with_null_for_a_non_finite_loss(tmp_path, monkeypatch):
    from pixelmodels.app.cli import main

    write_mnist(tmp_path / "data", "train", n=24, seed=1)
    write_mnist(tmp_path / "data", "test", n=4, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    faults.install("nan@2", monkeypatch.setattr)
    out = tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                 "--data-dir", str(tmp_path / "data"), "--batch-size", "8", "--max-steps", "2", "--n-samples", "0",
                 "--log-every", "1", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0

    def refuse(constant):
        raise ValueError(f"non-finite constant {constant} in metrics.jsonl")

    log = [json.loads(line, parse_constant=refuse) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (bad,) = [r for r in log if "bad_step" in r]
    assert bad["train_bpd"] is None and bad["step"] == 1
    assert all(math.isfinite(r["train_bpd"]) for r in log if "train_bpd" in r and r is not bad)


def test_cosine_and_linear_schedules_warm_up_then_decay_to_zero_at_the_last_step():
    def lrs(**kw):
        cfg = TrainConfig(max_steps=100, **kw)
        return [lr_factor(cfg, s) for s in range(100)]

    cos, lin = lrs(lr_schedule="cosine", warmup_steps=10), lrs(lr_schedule="linear", warmup_steps=10)
    for f in (cos, lin):
        assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # the warm-up reaches 1 at step 9
        assert f[10] == 1.0 and all(a >= b for a, b in zip(f[10:], f[11:]))
    assert cos[55] == pytest.approx(0.5) and lin[55] == pytest.approx(0.5)  # half way from step 10 to 100
    assert cos[99] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90))) and lin[99] == pytest.approx(1 / 90)
    assert lrs(lr_schedule="linear", decay_steps=50)[60] == 0.0  # --decay-steps before --max-steps
    assert lrs(lr_schedule="exponential", lr_decay=0.9, warmup_steps=2)[:3] == pytest.approx([0.5, 0.9, 0.81])


def test_the_schedules_the_trainer_runs(tmp_path):
    plain = tiny_trainer(tmp_path / "e", lr=0.1, lr_decay=0.5)
    assert isinstance(plain.sched, torch.optim.lr_scheduler.ExponentialLR)  # as every run before had it
    trainer = tiny_trainer(tmp_path / "c", lr=0.1, lr_schedule="cosine", warmup_steps=2, max_steps=6)
    x, y, _ = trainer.batch(next(trainer.batches(0)))
    seen = []
    for _ in range(6):
        seen.append(trainer.opt.param_groups[0]["lr"])
        trainer.train_step(x, y)
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 4)), 0.05,
                                  0.1 * 0.5 * (1 + math.cos(3 * math.pi / 4))], abs=1e-12)  # 0 at step 6
    with pytest.raises(PixelModelsError, match="--lr-schedule cosine: the learning rate decays to 0 at --decay-steps"):
        tiny_trainer(tmp_path / "x", lr_schedule="cosine", epochs=1)


def test_eval_every_steps_evaluates_within_an_epoch_and_the_last_step_is_saved(tmp_path):
    # 64 images at batch 16: an epoch is 4 steps, so without --eval-every-steps steps 2 and 6 would not
    # be evaluated; step 6 is both the last and an evaluation step, and it must still be checkpointed.
    trainer = tiny_trainer(tmp_path, max_steps=6, eval_every=100, eval_every_steps=2)
    last = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "test_bpd" in r] == [2, 4, 6]
    assert last["step"] == 6
    assert torch.load(tmp_path / "training_state.pt", weights_only=True)["step"] == 6
    resumed = tiny_trainer(tmp_path, resume=True)
    assert resumed.step == 6


def test_max_minutes_holds_with_the_evaluations_inside_it(tmp_path, monkeypatch):
    """A fake clock: a training step takes 1 s, an evaluation (its callbacks included) 3 s; --max-minutes 1. With
    epochs of 4 steps, each due for evaluation (--eval-every 1), the first evaluation comes at a tenth of the
    budget (6 s: step 6), the next when 27 s (nine evaluations) have passed since, at an epoch's end (step 36,
    at 39 s), and training stops when a step and the final evaluation would no longer fit (step 51, at 57 s)."""
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    step = Trainer.train_step

    def one_second(self, *args, **kwargs):
        now[0] += 1.0
        return step(self, *args, **kwargs)

    class Evaluations(Callbacks):
        def __init__(self):
            self.steps = []

        def on_evaluate(self, trainer, record):
            now[0] += 3.0
            self.steps.append(record["step"])

    monkeypatch.setattr(Trainer, "train_step", one_second)
    trainer, evaluations = tiny_trainer(tmp_path, max_minutes=1.0, eval_every=1), Evaluations()
    assert trainer.run.train.epochs == MAX_COUNT  # --max-minutes alone is the limit
    last = trainer.fit(evaluations)
    assert evaluations.steps == [6, 36, 51] and last["step"] == trainer.step == 51
    assert now[0] == 60.0  # the budget, the final evaluation included


def test_the_trainer_installs_no_signal_handler_and_the_run_layer_restores_them(tmp_path):
    seen = []

    class Look(RunCallbacks):
        def on_step(self, trainer, *args):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    tiny_trainer(tmp_path / "library", max_steps=1).fit(Look(progress=False))
    run_training(tiny_trainer(tmp_path / "run", max_steps=1), Look(progress=False), ["train", "x"])
    assert seen[0] == before and seen[1].__func__ is RunCallbacks.on_signal
    assert signal.getsignal(signal.SIGTERM) == before
    assert not (tmp_path / "library" / "command.txt").exists()
    assert (tmp_path / "run" / "command.txt").read_text() == "train x\n"


def test_training_says_what_runs_shows_its_progress_and_reports(tmp_path, monkeypatch, capsys):
    from pixelmodels.app.cli import main

    write_mnist(tmp_path / "data", "train", n=24, seed=1)
    write_mnist(tmp_path / "data", "test", n=4, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out = tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                 "--data-dir", str(tmp_path / "data"), "--batch-size", "8", "--max-steps", "1", "--n-samples", "0",
                 "--device", "cpu", "--precision", "fp32", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    parameters = pixelmodels.load(out).n_parameters()
    assert (f"gated-pixelcnn (preset tiny, {parameters:,} parameters) on fashion-mnist: 24 train and 4 test 8-bit "
            "images (1, 28, 28); cpu, fp32, batch 8; training runs to step 1 (--max-steps)\n") in printed.err
    assert re.search(r"^test bits/dim \(EMA weights\): \d+\.\d{4} after 1 step$", printed.out, re.M)

    class Look(RunCallbacks):
        def on_step(self, trainer, *args):
            super().on_step(trainer, *args)
            seen.append((self.bar.n, self.bar.total, self.bar.postfix))

    seen, trainer = [], tiny_trainer(tmp_path / "bar", max_steps=3)
    run_training(trainer, Look(progress=True), ["train"])
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    assert re.fullmatch(r"loss \d\.\d{3} bits/dim, [\d,]+ images/s", seen[0][2])  # no evaluation yet
    assert "training" in capsys.readouterr().err  # the bar, on stderr
    assert stop_rule(trainer.run.train, 64) == "training runs to step 3 (--max-steps)"
    assert stop_rule(resolve_train_config(TrainConfig(max_minutes=1), "gated-pixelcnn"), 64) == \
        "training runs 1 minute (--max-minutes, evaluation included)"
    assert stop_rule(resolve_train_config(TrainConfig(epochs=2, max_minutes=2.5), "gated-pixelcnn"), 64) == \
        "training stops after 2 epochs, 4 batches (--epochs), or after 2.5 minutes (--max-minutes, evaluation " \
        "included) if that comes first"


def test_the_trainer_perturbs_training_batches_only_and_decays_weights(tmp_path):
    trainer = tiny_trainer(tmp_path, perturb=0.5, weight_decay=0.01)
    idx = next(trainer.batches(0))
    raw = trainer.train_set.images[idx]
    x, _, _ = trainer.batch(idx)
    assert 0.25 < (x != raw).double().mean().item() < 0.5 and int(x.max()) < 4  # 1/4 of the draws are no change
    assert torch.equal(trainer.batch(idx)[0], x)  # the same (seed, epoch, batch): the same perturbation
    assert torch.equal(trainer.batch(idx, whole=True)[0], raw)  # the initializing batch is as it is
    assert trainer.opt.param_groups[0]["weight_decay"] == 0.01
    assert tiny_trainer(tmp_path / "plain").opt.param_groups[0]["weight_decay"] == 0
