"""Tests for service.training.trainer: learning, optimizers (SAM's two passes), apply(),
checkpoints, divergence, augmentation flags and epoch metrics. Small synthetic data and tiny
backbones."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator

import pytest
import torch

import service.training.trainer as trainer_mod
from service.training.backbones import build_backbone
from service.training.data import Splits, load_splits
from service.training.trainer import SAM, EpochMetrics, HParams, Trainer, make_optimizer

BACKBONE = "resnet18@0.0625"
SMALL_TRAIN = 64
BATCH = 32
STEPS = SMALL_TRAIN // BATCH  # optimizer steps per epoch on the small split
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "sam")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine two OpenMP threads spin against other
    processes and make these tiny models several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full() -> Splits:
    """The whole synthetic train split (360 images of 3x16x16, 10 classes)."""
    return load_splits("synthetic")


@pytest.fixture(scope="module")
def small() -> Splits:
    splits = load_splits("synthetic", max_train=SMALL_TRAIN)
    assert len(splits.train_x) == SMALL_TRAIN
    return splits


def _hp(**kw: object) -> HParams:
    return HParams(**{"batch_size": BATCH, **kw})


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _same_weights(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _roundtrip(state: dict) -> dict:
    """What a Tune checkpoint does: torch.save to bytes and back (no shared tensors)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _fresh(splits: Splits, hp: HParams, *, init_seed: int, seed: int = 0) -> Trainer:
    """A trainer with `seed` for batches/augmentation but weights initialised by `init_seed`."""
    torch.manual_seed(init_seed)
    model = build_backbone(BACKBONE, num_classes=splits.num_classes,
                           in_channels=splits.in_channels, image_size=splits.image_size)
    return Trainer(model, splits, hp, seed=seed)


def _opt_state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    sd = opt.state_dict()["state"]
    return [v for k in sorted(sd) for _, v in sorted(sd[k].items())
            if isinstance(v, torch.Tensor)]


class _ForwardCounter:
    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


# --------------------------------------------------------------------------- (a) learning


def test_adam_learns_synthetic_above_chance(full: Splits) -> None:
    """Checked over 24 init/data seeds: 5 epochs reach 0.78-0.97 val accuracy (chance 0.1)."""
    tr = Trainer.build(BACKBONE, full, _hp(optimizer="adam", lr=3e-3), seed=0)
    acc0, _ = tr.evaluate(full.val_x, full.val_y)
    losses = [tr.train_epoch().train_loss for _ in range(5)]
    acc, loss = tr.evaluate(full.val_x, full.val_y)
    assert acc >= 0.5, (acc0, acc, losses)
    assert acc > acc0 + 0.3
    assert losses[-1] < losses[0]
    assert math.isfinite(loss) and loss < math.log(10)  # below the uniform-guess loss
    assert tr.epoch == 5


# --------------------------------------------------------------------------- (b) optimizers


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_runs_an_epoch(small: Splits, name: str) -> None:
    lr = 1e-3 if name in ("adam", "adamw", "rmsprop") else 0.05
    tr = Trainer.build(BACKBONE, small, _hp(optimizer=name, lr=lr), seed=0)
    before = _weights(tr.model)
    counter = _ForwardCounter(tr.model)
    m = tr.train_epoch()
    assert math.isfinite(m.train_loss) and not m.diverged
    assert not _same_weights(before, _weights(tr.model))
    # SAM evaluates the loss twice per step (at w and at w + e(w)); the others once.
    assert counter.calls == (2 * STEPS if name == "sam" else STEPS)
    assert isinstance(tr.optimizer, SAM) == (name == "sam")


def test_make_optimizer_types_and_settings() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
             "rmsprop": torch.optim.RMSprop, "sam": SAM}
    for name, cls in kinds.items():
        opt = make_optimizer(HParams(optimizer=name, lr=0.02, weight_decay=1e-4), params)
        assert type(opt) is cls
        assert opt.param_groups[0]["lr"] == 0.02
        assert opt.param_groups[0]["weight_decay"] == 1e-4
        assert opt.param_groups[0]["params"][0] is params[0]
    sgd = make_optimizer(HParams(optimizer="sgd", momentum=0.7), params)
    assert sgd.param_groups[0]["momentum"] == 0.7
    with pytest.raises(ValueError, match="lbfgs"):
        make_optimizer(HParams(optimizer="lbfgs"), params)


def test_sam_needs_closure() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    opt = make_optimizer(HParams(optimizer="sam"), [p])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


def test_sam_step_uses_gradient_at_perturbed_point() -> None:
    """On f(w) = sum(w^4) the SAM gradient (at w + rho * g/|g|) differs from plain SGD's."""
    w0 = torch.tensor([1.0, -2.0])
    hp = HParams(optimizer="sam", lr=0.01, momentum=0.0)
    p = torch.nn.Parameter(w0.clone())
    opt = make_optimizer(hp, [p])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p ** 4).sum()
        loss.backward()
        return loss

    closure()
    g = 4 * w0 ** 3
    opt.step(closure)
    w_adv = w0 + trainer_mod.SAM_RHO * g / g.norm()
    expected = w0 - 0.01 * 4 * w_adv ** 3
    assert torch.allclose(p.detach(), expected, atol=1e-6)


# --------------------------------------------------------------------------- (c) apply


def test_apply_new_lr_keeps_optimizer_and_state(small: Splits) -> None:
    hp = _hp(optimizer="adam", lr=1e-3)
    tr = Trainer.build(BACKBONE, small, hp, seed=0)
    tr.train_epoch()
    opt = tr.optimizer
    state = _opt_state_tensors(opt)
    assert state
    state_copy = [t.clone() for t in state]
    changed = tr.apply(dataclasses.replace(hp, lr=5e-3))
    assert changed == ["lr"]
    assert tr.optimizer is opt
    assert all(g["lr"] == 5e-3 for g in opt.param_groups)
    after = _opt_state_tensors(opt)
    assert _same_weights(state_copy, after)
    assert tr.hp.lr == 5e-3
    assert math.isfinite(tr.train_epoch().train_loss)


def test_apply_unchanged_returns_nothing(small: Splits) -> None:
    hp = _hp()
    tr = Trainer.build(BACKBONE, small, hp, seed=0)
    opt = tr.optimizer
    assert tr.apply(dataclasses.replace(hp)) == []
    assert tr.optimizer is opt


def test_apply_other_settings_same_optimizer(small: Splits) -> None:
    hp = _hp(optimizer="sgd", lr=0.01, momentum=0.9)
    tr = Trainer.build(BACKBONE, small, hp, seed=0)
    opt, loss_fn = tr.optimizer, tr.loss_fn
    new = dataclasses.replace(hp, momentum=0.5, weight_decay=1e-4, label_smoothing=0.1,
                              flip=True, batch_size=16)
    changed = tr.apply(new)
    assert set(changed) == {"momentum", "weight_decay", "label_smoothing", "flip", "batch_size"}
    assert tr.optimizer is opt
    group = opt.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["lr"]) == (0.5, 1e-4, 0.01)
    assert tr.loss_fn is not loss_fn and tr.loss_fn.label_smoothing == 0.1
    assert tr.hp == new


@pytest.mark.parametrize(("source", "target"), [("adam", "sgd"), ("adam", "sam"),
                                                 ("adam", "rmsprop"), ("sam", "adam"),
                                                 ("sgd", "sam")])
def test_apply_new_optimizer_same_parameters(small: Splits, source: str, target: str) -> None:
    """Pham's per-epoch switch: same weights, a fresh optimizer of the new kind."""
    hp = _hp(optimizer=source, lr=1e-3)
    tr = Trainer.build(BACKBONE, small, hp, seed=0)
    tr.train_epoch()
    old = tr.optimizer
    before = _weights(tr.model)
    changed = tr.apply(dataclasses.replace(hp, optimizer=target, lr=0.02))
    assert set(changed) == {"optimizer", "lr"}
    assert tr.optimizer is not old
    assert type(tr.optimizer) is type(make_optimizer(tr.hp, [torch.nn.Parameter(torch.ones(1))]))
    opt_params = [p for g in tr.optimizer.param_groups for p in g["params"]]
    model_params = list(tr.model.parameters())
    assert len(opt_params) == len(model_params)
    assert all(a is b for a, b in zip(opt_params, model_params, strict=True))
    assert _same_weights(before, _weights(tr.model))  # the switch itself changes no weight
    assert not tr.optimizer.state_dict()["state"]  # fresh optimizer, no carried-over state
    assert all(g["lr"] == 0.02 for g in tr.optimizer.param_groups)
    m = tr.train_epoch()
    assert math.isfinite(m.train_loss)
    assert not _same_weights(before, _weights(tr.model))


# --------------------------------------------------------------------------- (d) checkpoints


def test_state_dict_restores_and_continues_identically(small: Splits) -> None:
    hp = _hp(optimizer="adam", lr=3e-3, flip=True, rotation=10)
    original = _fresh(small, hp, init_seed=0)
    original.train_epoch()
    original.train_epoch()
    ckpt = _roundtrip(original.state_dict())
    assert ckpt["epoch"] == 2 and ckpt["optimizer_name"] == "adam" and ckpt["hp"] == hp.as_dict()

    restored = _fresh(small, hp, init_seed=123)
    assert not _same_weights(_weights(original.model), _weights(restored.model))
    restored.load_state_dict(ckpt)
    assert restored.epoch == 2
    assert _same_weights(_weights(original.model), _weights(restored.model))
    assert _same_weights(_opt_state_tensors(original.optimizer),
                         _opt_state_tensors(restored.optimizer))

    m_orig = original.train_epoch()
    m_rest = restored.train_epoch()
    assert m_rest.train_loss == m_orig.train_loss
    assert m_rest.train_acc == m_orig.train_acc
    assert _same_weights(_weights(original.model), _weights(restored.model))


def test_batches_depend_on_epoch(small: Splits) -> None:
    """Restoring the epoch counter matters: a different epoch draws different batches."""
    hp = _hp(optimizer="adam", lr=3e-3)
    a = _fresh(small, hp, init_seed=0)
    b = _fresh(small, hp, init_seed=0)
    b.epoch = 5
    assert a.train_epoch().train_loss != b.train_epoch().train_loss


def test_load_with_new_lr_keeps_state_but_uses_new_lr(small: Splits) -> None:
    hp = _hp(optimizer="adam", lr=3e-3)
    original = _fresh(small, hp, init_seed=0)
    original.train_epoch()
    ckpt = _roundtrip(original.state_dict())
    restored = _fresh(small, dataclasses.replace(hp, lr=1e-4), init_seed=1)
    restored.load_state_dict(ckpt)
    assert _same_weights(_opt_state_tensors(original.optimizer),
                         _opt_state_tensors(restored.optimizer))
    assert all(g["lr"] == 1e-4 for g in restored.optimizer.param_groups)


def test_load_other_optimizer_keeps_weights_not_state(small: Splits) -> None:
    original = _fresh(small, _hp(optimizer="adam", lr=3e-3), init_seed=0)
    original.train_epoch()
    ckpt = _roundtrip(original.state_dict())
    restored = _fresh(small, _hp(optimizer="sgd", lr=0.05), init_seed=1)
    restored.load_state_dict(ckpt)
    assert restored.epoch == 1
    assert _same_weights(_weights(original.model), _weights(restored.model))
    assert isinstance(restored.optimizer, torch.optim.SGD)
    assert not restored.optimizer.state_dict()["state"]
    assert restored.optimizer.param_groups[0]["lr"] == 0.05
    assert math.isfinite(restored.train_epoch().train_loss)


def test_sam_checkpoint_restores_momentum_and_lr(small: Splits) -> None:
    hp = _hp(optimizer="sam", lr=0.05)
    original = _fresh(small, hp, init_seed=0)
    original.train_epoch()
    ckpt = _roundtrip(original.state_dict())
    restored = _fresh(small, hp, init_seed=1)
    restored.load_state_dict(ckpt)
    assert restored.train_epoch().train_loss == original.train_epoch().train_loss
    restored.apply(dataclasses.replace(hp, lr=0.5))
    assert all(g["lr"] == 0.5 for g in restored.optimizer.base.param_groups)


# --------------------------------------------------------------------------- (e) divergence


def test_nan_inputs_diverge(small: Splits) -> None:
    x = small.train_x.clone()
    x[::7] = float("nan")
    bad = dataclasses.replace(small, train_x=x)
    tr = Trainer.build(BACKBONE, bad, _hp(), seed=0)
    m = tr.train_epoch()
    assert m.diverged
    assert not math.isfinite(m.train_loss)
    assert not torch.isnan(small.train_x).any()  # the cached splits are untouched


def test_diverged_property() -> None:
    ok = EpochMetrics(1.0, 0.5, 2.0, 0.1, 100.0)
    assert not ok.diverged
    assert dataclasses.replace(ok, train_loss=float("inf")).diverged
    assert dataclasses.replace(ok, grad_norm=float("nan")).diverged


# --------------------------------------------------------------------------- (f) augmentation


@pytest.mark.parametrize(
    ("flags", "expect_calls"),
    [({}, 0), ({"flip": True}, STEPS), ({"rotation": 10}, STEPS),
     ({"shift": True, "zoom": True}, STEPS)],
)
def test_augmentation_flags_honored(small: Splits, monkeypatch: pytest.MonkeyPatch,
                                    flags: dict, expect_calls: int) -> None:
    calls: list[object] = []
    real = trainer_mod.augment_batch

    def counting(x: torch.Tensor, spec: object, **kw: object) -> torch.Tensor:
        calls.append(spec)
        return real(x, spec, **kw)

    monkeypatch.setattr(trainer_mod, "augment_batch", counting)
    hp = _hp(**flags)
    tr = Trainer.build(BACKBONE, small, hp, seed=0)
    assert math.isfinite(tr.train_epoch().train_loss)
    assert len(calls) == expect_calls
    assert all(spec == hp.augment for spec in calls)


# --------------------------------------------------------------------------- (g) metrics


def test_epoch_metrics_and_evaluate(small: Splits) -> None:
    tr = Trainer.build(BACKBONE, small, _hp(lr=3e-3), seed=0)
    assert tr.num_parameters > 0 and tr.model_size_mb > 0
    m = tr.train_epoch()
    assert m.images_per_s > 0 and math.isfinite(m.images_per_s)
    assert m.epoch_time_s > 0
    assert m.images_per_s == pytest.approx(SMALL_TRAIN / m.epoch_time_s)
    assert 0.0 <= m.train_acc <= 1.0
    assert math.isfinite(m.grad_norm) and m.grad_norm > 0
    assert math.isfinite(m.train_loss) and m.train_loss > 0
    acc, loss = tr.evaluate(small.val_x, small.val_y, batch_size=50)
    assert 0.0 <= acc <= 1.0
    assert math.isfinite(loss) and loss > 0
    # Batching does not change the result, and evaluation leaves the weights alone.
    before = _weights(tr.model)
    acc2, loss2 = tr.evaluate(small.val_x, small.val_y, batch_size=512)
    assert acc2 == acc and loss2 == pytest.approx(loss, rel=1e-5)
    assert _same_weights(before, _weights(tr.model))
    assert not tr.model.training


def test_hparams_from_config_refuses_unknown_names() -> None:
    """Architecture names of the catalogue (width) belong to the backbone and are skipped;
    a name outside the catalogue is an error, not silently dropped."""
    hp = HParams.from_config({"optimizer": "sgd", "lr": 0.1, "width": 0.5})
    assert hp == HParams(optimizer="sgd", lr=0.1)
    with pytest.raises(ValueError, match="unknown hyperparameter.*log10_lr"):
        HParams.from_config({"optimizer": "sgd", "log10_lr": -1})
    with pytest.raises(ValueError, match="unknown hyperparameter.*lrr"):
        HParams.from_config({"lrr": 0.1})
    assert hp.replace({"lr": 0.5, "flip": True}) == HParams(optimizer="sgd", lr=0.5, flip=True)
    assert hp.augment.is_identity
    assert not HParams(flip=True).augment.is_identity


def test_hparams_is_the_trainer_part_of_the_one_catalogue() -> None:
    from service.core.space import HPARAMS, LAYER_HPARAMS

    fields = set(HParams.__dataclass_fields__)
    assert fields <= set(HPARAMS)
    # architecture (the backbone's) and the trial's own epoch budget (the run's)
    assert set(HPARAMS) - fields == {"width", "epochs", *LAYER_HPARAMS}
    assert len(LAYER_HPARAMS) == 13 * 3 + 5 + 1
    assert all(getattr(HParams(), k) == HPARAMS[k].default for k in fields)


def test_batch_time_limit_stops_the_epoch_after_patience_slow_batches(small: Splits) -> None:
    trainer = Trainer.build(BACKBONE, small, HParams(batch_size=8), seed=0)
    full = trainer.train_epoch()
    assert not full.slow_batches and full.ms_per_batch > 0
    cut = trainer.train_epoch(batch_time_limit_s=1e-9, batch_time_patience=3)
    assert cut.slow_batches and trainer.epoch == 2
    assert cut.images_per_s * cut.epoch_time_s == pytest.approx(24)  # three batches of 8
    easy = trainer.train_epoch(batch_time_limit_s=1e6, batch_time_patience=1)
    assert not easy.slow_batches
    assert trainer.inference_ms_per_batch(small.val_x) > 0


def test_init_seed_draws_other_weights_with_the_same_batches(small: Splits) -> None:
    a = Trainer.build(BACKBONE, small, HParams(), seed=0)
    b = Trainer.build(BACKBONE, small, HParams(), seed=0, init_seed=7)
    c = Trainer.build(BACKBONE, small, HParams(), seed=0, init_seed=0)
    wa, wb, wc = (next(t.model.parameters()) for t in (a, b, c))
    assert not torch.equal(wa, wb) and torch.equal(wa, wc)
    assert torch.equal(a._generator(0).initial_seed() * torch.ones(1),
                       b._generator(0).initial_seed() * torch.ones(1))


# HYPERA's regularization and loss hyperparameters, and the gradient statistics.


def test_focal_loss_known_value_and_gamma_zero_is_cross_entropy() -> None:
    from service.training.trainer import FocalLoss, make_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    p_t = torch.softmax(logits, 1)[[0, 1], [0, 2]]
    want = ((1 - p_t) ** 2 * ce).mean()
    assert FocalLoss(2.0)(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    assert FocalLoss(0.0)(logits, target).item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert isinstance(make_loss(_hp()), torch.nn.CrossEntropyLoss)
    assert isinstance(make_loss(_hp(focal_gamma=1.5)), FocalLoss)


def test_focal_gamma_and_dropout_change_training_and_apply_switches_them(small: Splits
                                                                         ) -> None:
    def losses(**hp: object) -> float:
        trainer = _fresh(small, _hp(), init_seed=0)
        trainer.apply(_hp(**hp))
        return trainer.train_epoch().train_loss

    plain = losses()
    assert losses(dropout=0.0, focal_gamma=0.0) == plain  # the defaults change nothing
    assert losses(focal_gamma=2.0) != plain
    assert losses(dropout=0.5) != plain


def test_classifier_dropout_is_off_in_evaluation(small: Splits) -> None:
    trainer = _fresh(small, _hp(dropout=0.9), init_seed=0)
    assert trainer._dropout.attached
    first = trainer.evaluate(small.val_x, small.val_y)
    assert trainer.evaluate(small.val_x, small.val_y) == first  # deterministic: no dropout


def test_grad_norm_std_is_the_spread_of_the_batch_norms(small: Splits) -> None:
    metrics = _fresh(small, _hp(), init_seed=0).train_epoch()
    assert math.isfinite(metrics.grad_norm_std) and metrics.grad_norm_std > 0
    assert metrics.grad_norm_std < 10 * metrics.grad_norm
