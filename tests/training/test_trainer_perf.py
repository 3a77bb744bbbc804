"""The GPU path's switches (service.training.trainer.Perf), each checked on the CPU: channels-last
trains to the same loss as the default layout, bf16 autocast stays close to float32, a
compiled model gives the eager model's results and checkpoints, `auto` leaves the CPU alone."""

from __future__ import annotations

import math

import pytest
import torch

from service.core.config import ConfigError, build_config
from service.training.data import Splits, load_splits
from service.training.trainer import HParams, Perf, Trainer
from tests.fresh import fresh_python

HP = HParams(optimizer="sgd", lr=0.05, batch_size=40, flip=True, rotation=10)


@pytest.fixture(scope="module")
def splits() -> Splits:
    torch.set_num_threads(1)
    return load_splits("synthetic", max_train=120)


def _run(splits: Splits, perf: Perf, backbone: str = "resnet18@0.0625", epochs: int = 2
         ) -> tuple[Trainer, list[float], tuple[float, float]]:
    trainer = Trainer.build(backbone, splits, HP, seed=3, perf=perf)
    losses = [trainer.train_epoch().train_loss for _ in range(epochs)]
    return trainer, losses, trainer.evaluate(splits.val_x, splits.val_y)


def test_auto_leaves_the_cpu_in_float32_and_the_default_layout(splits: Splits) -> None:
    trainer = Trainer.build("resnet18@0.0625", splits, HP, seed=0)
    assert trainer.amp_dtype is None and not trainer.channels_last
    assert trainer.forward is trainer.model
    forced = Trainer.build("resnet18@0.0625", splits, HP, seed=0,
                           perf=Perf(amp="bf16", channels_last="on"))
    assert forced.amp_dtype == torch.bfloat16 and forced.channels_last
    assert forced.train_x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backbone", ["resnet18@0.0625", "vgg16@0.0625"])
def test_channels_last_gives_the_same_loss(splits: Splits, backbone: str) -> None:
    """The same weights give the same loss and accuracy in either layout (float summation
    order aside), and an epoch of training from them the same loss to 1e-3."""
    plain, (loss,), plain_eval = _run(splits, Perf(channels_last="off"), backbone, 1)
    last = Trainer.build(backbone, splits, HP, seed=3, perf=Perf(channels_last="on"))
    last.load_state_dict(plain.state_dict())
    assert last.evaluate(splits.val_x, splits.val_y) == pytest.approx(plain_eval, rel=1e-5,
                                                                      abs=1e-6)
    _, (fresh_loss,), _ = _run(splits, Perf(channels_last="on"), backbone, 1)
    assert fresh_loss == pytest.approx(loss, rel=1e-3)
    assert next(iter(p for p in last.model.parameters() if p.dim() == 4)).is_contiguous(
        memory_format=torch.channels_last)


def test_bf16_autocast_stays_close_to_float32(splits: Splits) -> None:
    trainer, fp32, _ = _run(splits, Perf(amp="off"), epochs=1)
    bf16_trainer, bf16, (acc, loss) = _run(splits, Perf(amp="bf16"), epochs=1)
    assert all(math.isfinite(v) for v in bf16) and math.isfinite(loss)
    assert bf16[0] == pytest.approx(fp32[0], rel=0.05)  # bf16 keeps ~3 significant digits
    # weights and optimizer state stay float32 (autocast casts inside the forward pass)
    assert all(p.dtype == torch.float32 for p in bf16_trainer.model.parameters())


def test_a_compiled_model_matches_the_eager_one_and_saves_plain_weights(splits: Splits
                                                                         ) -> None:
    eager, eager_losses, eager_eval = _run(splits, Perf(), epochs=1)
    compiled, losses, evaluation = _run(splits, Perf(compile=True), epochs=1)
    assert compiled.forward is not compiled.model
    assert losses == pytest.approx(eager_losses, rel=1e-4)
    assert evaluation == pytest.approx(eager_eval, rel=1e-3, abs=1e-4)
    state = compiled.state_dict()["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
    eager.load_state_dict(compiled.state_dict())  # a checkpoint loads either way


def test_the_config_names_a_bad_switch() -> None:
    with pytest.raises(ConfigError, match="perf.amp"):
        build_config({"perf": {"amp": "fp16"}})
    assert build_config({"perf": {"channels_last": "on"}}).perf.channels_last == "on"


def test_the_gpu_check_runs_in_its_reduced_form_on_the_cpu(capsys) -> None:
    """`python -m service.benchmark gpu` without a GPU: every backbone and switch measured
    on small CIFAR-shaped data, the bare loop beside it, so the check cannot rot."""
    from service import benchmark

    rows = benchmark.gpu_check(("resnet18", "efficientnetv2_b0"), ("fp32", "bf16+channels_last"),
                               images=64, batch_size=32, epochs=1, width=0.0625, device="cpu")
    assert [(r["backbone"], r["switch"]) for r in rows] == [
        ("resnet18@0.0625", "fp32"), ("resnet18@0.0625", "bf16+channels_last"),
        ("efficientnetv2_b0@0.0625", "fp32"), ("efficientnetv2_b0@0.0625",
                                               "bf16+channels_last")]
    for r in rows:
        assert r["trainer_images_per_s"] > 0 and r["bare_images_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["trainer_images_per_s"] / r["bare_images_per_s"])
        assert math.isnan(r["peak_mem_gib"]) and r["trials_per_gpu"] is None
    benchmark.print_gpu_check(rows)
    out = capsys.readouterr().out
    assert "no GPU: the reduced form on the CPU" in out and "bf16+channels_last" in out


def test_the_gpu_check_needs_no_ray() -> None:
    """GPU images often lack Ray: the check imports torch, torchvision and the project only."""
    code = ("import sys, service.benchmark as b; b.gpu_check(('resnet18',), ('fp32',), "
            "images=32, batch_size=32, epochs=1, width=0.0625, device='cpu'); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    assert fresh_python(code, timeout=120) == "[]"


def test_auto_evaluates_in_channels_last_on_the_cpu_from_8_channels(splits: Splits) -> None:
    wide = Trainer.build("vgg16@0.125", splits, HP, seed=0)  # narrowest conv: 8 channels
    narrow = Trainer.build("resnet18@0.0625", splits, HP, seed=0)  # 4 channels
    # 16 px: 8 x 256 values out of the stem, under 4,096: 512 a batch; 32 px: 128
    assert (wide.eval_channels_last, wide.eval_batch_size) == (True, 512)
    large = load_splits("synthetic", image_size=32, max_train=20)
    assert Trainer.build("vgg16@0.125", large, HP, seed=0).eval_batch_size == 128
    assert not wide.channels_last  # training keeps the default layout
    assert not narrow.eval_channels_last
    off = Trainer.build("vgg16@0.125", splits, HP, seed=0,
                        perf=Perf(eval_channels_last="off", eval_batch_size=64))
    assert (off.eval_channels_last, off.eval_batch_size) == (False, 64)


@pytest.mark.parametrize("backbone", ["resnet18@0.0625", "vgg16@0.0625"])
def test_channels_last_evaluation_scores_alike_and_leaves_training_untouched(
        splits: Splits, backbone: str) -> None:
    """Evaluating in channels-last between epochs gives the default layout's scores (float
    summation order aside), predictions included, and training goes on bit for bit as if
    the other layout never happened: the same Parameter objects, in the training layout."""
    runs = {}
    for layout in ("on", "off"):
        trainer = Trainer.build(backbone, splits, HP, seed=3,
                                perf=Perf(eval_channels_last=layout))
        params = [id(p) for p in trainer.optimizer.param_groups[0]["params"]]
        rows = []
        for _ in range(2):
            rows.append((trainer.train_epoch().train_loss,
                         trainer.score(splits.val_x, splits.val_y)))
        assert [id(p) for p in trainer.model.parameters()] == params
        assert all(p.is_contiguous() for p in trainer.model.parameters())
        runs[layout] = rows
    for (loss_on, on), (loss_off, off) in zip(runs["on"], runs["off"], strict=True):
        assert loss_on == loss_off
        assert on.acc == off.acc and torch.equal(on.predicted, off.predicted)
        assert on.loss == pytest.approx(off.loss, rel=1e-5, abs=1e-6)


def test_per_trial_overhead_is_the_slope_between_two_sizes() -> None:
    """`service.benchmark overhead` splits a run's wall time into a cost per trial and a
    fixed cost per experiment, so the experiment's start is not spread over its trials."""
    from service import benchmark

    sizes = []

    def run(k: int) -> tuple[int, float, int]:
        sizes.append(k)
        return k, 4.0 + 0.03 * k, k  # 4 s to start and end, 30 ms a trial

    per, fixed, (small, large) = benchmark.marginal(run, 60)
    assert sizes == [60, 120] and (small, large) == (60, 120)
    assert per == pytest.approx(0.03) and fixed == pytest.approx(4.0)


def test_the_gradient_norm_takes_no_pass_that_writes_the_gradients(splits: Splits) -> None:
    """The per-step gradient norm only reads the gradients: nothing multiplies them in place
    (clip_grad_norm_ with an infinite bound multiplied each by 1, a pass every step), and
    the epoch's grad_norm is still their mean norm."""
    from torch.utils._python_dispatch import TorchDispatchMode

    trainer = Trainer.build("vgg16@0.0625", splits, HParams(optimizer="sgd", lr=0.05,
                                                            batch_size=40), seed=0)
    params = list(trainer.model.parameters())

    class Writes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.on_grads: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if "mul_" in str(func):
                grads = {p.grad.data_ptr() for p in params if p.grad is not None}
                targets = args[0] if isinstance(args[0], list | tuple) else [args[0]]
                if any(t.data_ptr() in grads for t in targets):
                    self.on_grads.append(str(func))
            return func(*args, **(kwargs or {}))

    with Writes() as writes:
        metrics = trainer.train_epoch()
    assert writes.on_grads == []
    assert math.isfinite(metrics.grad_norm) and metrics.grad_norm > 0
