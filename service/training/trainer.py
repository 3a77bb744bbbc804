"""The training loop, plain PyTorch and independent of Ray, so the Tune trainable, the final
test run and the throughput benchmark share one implementation.

Data stay as tensors (on the GPU when there is one): batches are index slices, augmentation
runs batched on the same device, and metrics accumulate on the device with one sync per
epoch, which keeps the trainer at the speed of a bare PyTorch loop.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from service.core.config import PerfConfig
from service.core.space import HPARAMS, OPTIMIZERS, resolve_config
from service.training.augment import AugmentSpec, augment_batch
from service.training.backbones import (
    BackboneSpec,
    build_backbone,
    count_parameters,
    load_state_dict_file,
    model_size_mb,
)
from service.training.data import Splits

SAM_RHO = 0.05
"""Neighbourhood size of SAM (Foret et al.; the SAM of seed 004)."""


def _default(name: str) -> Any:
    return HPARAMS[name].default


@dataclass(frozen=True)
class HParams:
    """Hyperparameters in force in a trial: the trainer's part of the one catalogue
    (`service.core.space.HPARAMS`, which gives the defaults); `from_config` reads a resolved
    trial config."""

    optimizer: str = _default("optimizer")
    lr: float = _default("lr")
    momentum: float = _default("momentum")
    weight_decay: float = _default("weight_decay")
    batch_size: int = _default("batch_size")
    flip: bool = _default("flip")
    rotation: int = _default("rotation")
    shift: bool = _default("shift")
    zoom: bool = _default("zoom")
    trivialaugment: bool = _default("trivialaugment")
    label_smoothing: float = _default("label_smoothing")
    dropout: float = _default("dropout")
    flip_prob: float = _default("flip_prob")
    shift_frac: float = _default("shift_frac")
    zoom_frac: float = _default("zoom_frac")
    focal_gamma: float = _default("focal_gamma")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HParams:
        """The trainer's hyperparameters of a (resolved) config. Architecture names of the
        catalogue (width) are the backbone's, not the trainer's; any other name is refused."""
        unknown = [k for k in config if k not in HPARAMS]
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {', '.join(HPARAMS)}")
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in config.items() if k in names})

    def replace(self, changes: dict[str, Any]) -> HParams:
        """These hyperparameters with `changes` applied (resolved like a trial config)."""
        return HParams.from_config({k: v for k, v in resolve_config(
            {**self.as_dict(), **changes}).items() if k in self.__dataclass_fields__})

    @property
    def augment(self) -> AugmentSpec:
        return AugmentSpec(flip=self.flip, rotation=self.rotation, shift=self.shift,
                           zoom=self.zoom, trivialaugment=self.trivialaugment,
                           flip_prob=self.flip_prob, shift_frac=self.shift_frac,
                           zoom_frac=self.zoom_frac)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around an SGD base step: needs a closure that recomputes
    the loss and gradients (two forward/backward passes per step)."""

    def __init__(self, params: Any, lr: float, momentum: float, weight_decay: float,
                 rho: float = SAM_RHO) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "rho": rho})
        self.base = torch.optim.SGD(self.param_groups, lr=lr, momentum=momentum,
                                    weight_decay=weight_decay)
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict rebinds param_groups/state; keep the SGD base on them.
        self.base.param_groups = self.param_groups
        self.base.state = self.state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss")
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
        scale = self.param_groups[0]["rho"] / (grad_norm + 1e-12)
        offsets = [p.grad * scale for p in params]
        torch._foreach_add_(params, offsets)
        with torch.enable_grad():
            loss = closure()
        torch._foreach_sub_(params, offsets)
        self.base.step()
        return loss


def make_optimizer(hp: HParams, params: Any) -> torch.optim.Optimizer:
    """Build the optimizer named in `hp` over `params`."""
    name, lr, wd, mom = hp.optimizer, hp.lr, hp.weight_decay, hp.momentum
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)
    if name == "sam":
        return SAM(params, lr=lr, momentum=mom, weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy (with label smoothing) weighted by
    (1 - p_t)^gamma per sample, so that easy examples count less (HYPERA's loss
    agent tunes gamma)."""

    def __init__(self, gamma: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = float(gamma), float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, target, reduction="none",
                                         label_smoothing=self.label_smoothing)
        p_t = torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
        return ((1.0 - p_t).clamp(min=0.0) ** self.gamma * ce).mean()


def make_loss(hp: HParams) -> nn.Module:
    """The training loss `hp` names: cross-entropy, or focal loss when focal_gamma > 0."""
    if hp.focal_gamma > 0:
        return FocalLoss(hp.focal_gamma, hp.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)


class _ClassifierDropout:
    """Dropout on the input of the model's last `nn.Linear` (its classifier), as a forward
    pre-hook whose rate can change between epochs; off at rate 0 and in eval mode."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = float(rate)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.attached = bool(linears)
        if linears:
            linears[-1].register_forward_pre_hook(self)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        if self.rate <= 0 or not module.training:
            return None
        return (nn.functional.dropout(args[0], self.rate, True), *args[1:])


@dataclass
class EpochMetrics:
    """What one epoch measured."""

    train_loss: float
    train_acc: float
    grad_norm: float
    epoch_time_s: float
    images_per_s: float
    ms_per_batch: float = math.nan
    grad_norm_std: float = math.nan
    """Standard deviation of the per-batch gradient norms over the epoch (HYPERA's
    state: gradient variance); summed on the device, no extra sync per step."""
    slow_batches: bool = False
    """The epoch stopped early: `batch_time_patience` consecutive batches each took longer
    than `batch_time_limit_s` (Iranfar et al. section V-E's early termination)."""

    @property
    def diverged(self) -> bool:
        return not (math.isfinite(self.train_loss) and math.isfinite(self.grad_norm))


EVAL_CHANNELS_LAST_MIN_WIDTH = 8
"""Narrowest conv (output channels) for which `auto` evaluates in channels-last on the CPU."""

EVAL_SMALL_BATCH_VALUES = 4096
"""On the CPU, images whose first convolution outputs at least this many values (channels x
pixels) evaluate 128 a batch, others 512 (`python -m service.benchmark eval`, one thread:
VGG-16@0.25 and @0.125 and ResNet-18@0.125 at 32 px, VGG-16@0.25 at 16 px, 4,096 values and
more, were 12-35% faster at 128; VGG-16@0.125, ResNet-18@0.125 and @0.0625 at 16 px, 2,048
and fewer, 15-30% faster at 512). A GPU evaluates 512 a batch."""


class Perf(PerfConfig):
    """How a trial runs on its device, never what it learns: the config's `perf` model
    (`service.core.config.PerfConfig`, its fields and checks) with the rules that resolve
    `auto` for a device. `auto` switches bf16 autocast and channels-last on for CUDA (bf16
    where the GPU supports it) and off on the CPU; `on` forces them anywhere (tested on the
    CPU)."""

    def resolve(self, device: torch.device, model: nn.Module) -> tuple[torch.dtype | None,
                                                                      bool]:
        """(autocast dtype or None, channels-last or not) for this device and model."""
        cuda = device.type == "cuda"
        amp = self.amp == "bf16" or (self.amp == "auto" and cuda and
                                      torch.cuda.is_bf16_supported())
        convs = any(isinstance(m, nn.Conv2d) for m in model.modules())
        last = convs and (self.channels_last == "on" or (self.channels_last == "auto" and cuda))
        return (torch.bfloat16 if amp else None), last

    def resolve_eval(self, device: torch.device, model: nn.Module, channels_last: bool,
                     pixels: int) -> tuple[bool, int]:
        """(channels-last evaluation or not, evaluation batch size). `auto` evaluates in
        the training layout, except on the CPU, where channels-last forward passes of convs
        with at least EVAL_CHANNELS_LAST_MIN_WIDTH channels are faster (measured here:
        VGG-16 at width 0.125 and 0.25, ResNet-18 at 0.125, 30-40% faster; ResNet-18 at
        0.0625, 4-channel convs, 16% slower). A compiled model keeps its one layout."""
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        if self.eval_channels_last == "auto":
            last = channels_last or (device.type == "cpu" and not self.compile and
                                     bool(widths) and
                                     min(widths) >= EVAL_CHANNELS_LAST_MIN_WIDTH)
        else:
            last = bool(widths) and self.eval_channels_last == "on"
        large = bool(widths) and widths[0] * pixels >= EVAL_SMALL_BATCH_VALUES
        return last, self.eval_batch_size or (128 if device.type == "cpu" and large else 512)


class EpochCancelled(Exception):
    """Raised by `Trainer.train_epoch` at the first batch after `Trainer.cancel` was set."""


class Scores(NamedTuple):
    """One evaluation pass over a split."""

    acc: float
    loss: float
    predicted: torch.Tensor  # the predicted classes, on the CPU


class Trainer:
    """Trains one backbone on in-memory splits; hyperparameters can change between epochs
    (optimizer rebuilt on the same weights), as PBT and in-training controllers need."""

    def __init__(self, model: nn.Module, splits: Splits, hp: HParams, *,
                 device: torch.device | str = "cpu", seed: int = 0,
                 perf: Perf | None = None) -> None:
        self.device = torch.device(device)
        self.perf = perf or Perf()
        self.amp_dtype, self.channels_last = self.perf.resolve(self.device, model)
        self.eval_channels_last, self.eval_batch_size = self.perf.resolve_eval(
            self.device, model, self.channels_last, splits.image_size ** 2)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        # The compiled module shares the eager one's parameters; state dicts come from the
        # eager one (no "_orig_mod." prefix), so checkpoints load either way.
        # On the CPU, inductor would move convolutions to channels-last by itself, into the
        # oneDNN crash `kernels` describes: it keeps the model's layout there.
        cpu = {"layout_optimization": False} if self.device.type == "cpu" else None
        self.forward = (torch.compile(self.model, options=cpu) if self.perf.compile
                        else self.model)
        self.splits = splits
        self.seed = seed
        self.epoch = 0
        # set from another thread to end an epoch in flight
        # (service.backends.tune.trainable.EpochFeed)
        self.cancel: threading.Event | None = None
        on_device = self.device.type != "cpu"
        self.train_x = splits.train_x.to(self.device) if on_device else splits.train_x
        if self.channels_last:  # stored once in the layout the convolutions read
            self.train_x = self.train_x.contiguous(memory_format=torch.channels_last)
        self.train_y = splits.train_y.to(self.device) if on_device else splits.train_y
        self.hp = hp
        self.optimizer = make_optimizer(hp, self.model.parameters())
        self.loss_fn = make_loss(hp)
        self._dropout = _ClassifierDropout(self.model, hp.dropout)
        self.num_parameters = count_parameters(self.model)
        self.model_size_mb = model_size_mb(self.model)

    @classmethod
    def build(cls, backbone: str | BackboneSpec, splits: Splits, hp: HParams, *,
              device: torch.device | str = "cpu", seed: int = 0,
              weights: str | None = None, layers: dict[str, int] | None = None,
              init_seed: int | None = None, perf: Perf | None = None) -> Trainer:
        """Seeded model init, so every config of one seed starts from the same weights
        (`init_seed`, default `seed`: a restart draws fresh ones, same batches); `weights`
        is a local state dict file (loaded with weights_only, never unpickled); `layers`
        the per-layer architecture of a layered backbone."""
        torch.manual_seed(seed if init_seed is None else init_seed)
        model = build_backbone(backbone, num_classes=splits.num_classes,
                               in_channels=splits.in_channels, image_size=splits.image_size,
                               layers=layers)
        if weights:
            load_state_dict_file(model, weights)
        return cls(model, splits, hp, device=device, seed=seed, perf=perf)

    def apply(self, hp: HParams) -> list[str]:
        """Switch hyperparameters in place; returns the names that changed. A new optimizer
        type is rebuilt on the same weights; a new rate keeps the optimizer's state."""
        changed = [k for k, v in hp.as_dict().items() if getattr(self.hp, k) != v]
        if not changed:
            return changed
        if hp.optimizer != self.hp.optimizer:
            self.optimizer = make_optimizer(hp, self.model.parameters())
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = hp.lr
                group["weight_decay"] = hp.weight_decay
                if "momentum" in group:
                    group["momentum"] = hp.momentum
        if (hp.label_smoothing, hp.focal_gamma) != (self.hp.label_smoothing,
                                                     self.hp.focal_gamma):
            self.loss_fn = make_loss(hp)
        self._dropout.rate = hp.dropout
        self.hp = hp
        return changed

    def _autocast(self) -> Any:
        """bf16 autocast for the forward pass and loss when `perf.amp` resolved to it (no
        loss scaling: bf16 keeps float32's range)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _generator(self, salt: int, device: torch.device | str = "cpu") -> torch.Generator:
        # Seeded per (seed, epoch): a resumed trial draws the same batches and augmentations.
        return torch.Generator(device).manual_seed(
            self.seed * 1_000_003 + self.epoch * 7919 + salt)

    def _augment_generator(self, order_generator: torch.Generator, spec: AugmentSpec
                           ) -> torch.Generator:
        """The epoch's augmentation draws: on the CPU, the batch order's generator (as ever);
        on a GPU, a generator on the GPU, so a step's random matrices are made there and no
        copy from the host waits for the GPU's queue. TrivialAugmentWide draws on the CPU."""
        if self.device.type == "cpu" or spec.trivialaugment:
            return order_generator
        return self._generator(1, self.device)

    def kernels(self) -> Any:
        """torch 2.14.1's oneDNN corrupts the heap (the process aborts) in the backward of a
        1x1 stride-2 convolution with fewer than 8 input channels in channels-last on the
        CPU (a width-scaled ResNet-18's shortcut; seen here): channels-last on the CPU runs
        on ATen's own kernels instead. CUDA, and the CPU's default layout, are unchanged."""
        if self.device.type == "cpu" and self.channels_last and self.forward is self.model:
            return torch.backends.mkldnn.flags(enabled=False)
        return contextlib.nullcontext()

    def train_epoch(self, batch_time_limit_s: float = 0.0,
                    batch_time_patience: int = 1) -> EpochMetrics:
        """One pass over the training split. With `batch_time_limit_s` > 0 every batch is
        timed (synchronised on a GPU) and the pass stops once `batch_time_patience`
        consecutive batches were slower (`EpochMetrics.slow_batches`). Raises
        EpochCancelled at the first batch after `self.cancel` is set."""
        with self.kernels():
            return self._train_epoch(batch_time_limit_s, batch_time_patience)

    def _train_epoch(self, batch_time_limit_s: float, batch_time_patience: int
                     ) -> EpochMetrics:
        self.model.train()
        hp, n = self.hp, self.train_x.shape[0]
        gen = self._generator(0)
        order = torch.randperm(n, generator=gen).to(self.device)
        aug = hp.augment
        aug_gen = self._augment_generator(gen, aug)
        params = [p for p in self.model.parameters() if p.requires_grad]
        sam = isinstance(self.optimizer, SAM)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        norm_sum = torch.zeros((), device=self.device)
        norm_sq = torch.zeros((), device=self.device)
        steps = seen = slow = 0
        start = time.perf_counter()
        timed, cuda = batch_time_limit_s > 0, self.device.type == "cuda"
        cancel = self.cancel
        for i in range(0, n, hp.batch_size):
            if cancel is not None and cancel.is_set():
                raise EpochCancelled(f"epoch {self.epoch + 1} cancelled after {steps} batches")
            began = time.perf_counter()
            idx = order[i:i + hp.batch_size]
            x, y = self.train_x[idx], self.train_y[idx]
            if not aug.is_identity:
                x = augment_batch(x, aug, generator=aug_gen)
            x = self._layout(x)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                out = self.forward(x)
                loss = self.loss_fn(out.float(), y)
            loss.backward()
            # the norm alone (clip_grad_norm_ with an infinite bound also multiplies every
            # gradient by 1, a pass over them each step)
            norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            norm_sum += norm
            norm_sq += norm * norm
            if sam:
                def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    self.optimizer.zero_grad(set_to_none=True)
                    with self._autocast():
                        second = self.loss_fn(self.forward(x).float(), y)
                    second.backward()
                    return second
                self.optimizer.step(closure)
            else:
                self.optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (out.detach().argmax(1) == y).sum()
            steps += 1
            seen += y.shape[0]
            if timed:
                if cuda:
                    torch.cuda.synchronize(self.device)
                slow = slow + 1 if time.perf_counter() - began > batch_time_limit_s else 0
                if slow >= max(1, batch_time_patience):
                    break
        if cuda:
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.epoch += 1
        mean_norm = float(norm_sum) / max(1, steps)
        var_norm = float(norm_sq) / max(1, steps) - mean_norm ** 2
        return EpochMetrics(
            train_loss=float(loss_sum) / max(1, seen),
            train_acc=float(correct) / max(1, seen),
            grad_norm=mean_norm,
            grad_norm_std=math.sqrt(max(0.0, var_norm)) if math.isfinite(var_norm)
            else math.nan,
            epoch_time_s=elapsed,
            images_per_s=seen / elapsed if elapsed > 0 else float("inf"),
            ms_per_batch=1000.0 * elapsed / max(1, steps),
            slow_batches=slow >= max(1, batch_time_patience) and timed,
        )

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode, with the weights in the evaluation layout for the pass and back in the
        training layout after it (`Module.to` keeps the Parameter objects, so the optimizer
        and its state are untouched; the values are copied exactly)."""
        self.model.eval()
        swap = self.eval_channels_last != self.channels_last
        if swap:
            self.model.to(memory_format=torch.channels_last if self.eval_channels_last
                          else torch.contiguous_format)
        try:
            yield
        finally:
            if swap:
                self.model.to(memory_format=torch.channels_last if self.channels_last
                              else torch.contiguous_format)

    def _eval_batches(self, x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        for i in range(0, x.shape[0], size):
            xb = x[i:i + size].to(self.device, non_blocking=True)
            yield (xb.contiguous(memory_format=torch.channels_last)
                   if self.eval_channels_last else xb)

    @torch.no_grad()
    def score(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
              ) -> Scores:
        """Accuracy, mean loss and predictions on a split, without augmentation, in one
        pass (`perf.eval_batch_size` images at a time unless `batch_size`)."""
        size = batch_size or self.eval_batch_size
        loss_sum = torch.zeros((), device=self.device)
        predicted = []
        with self._inference():
            for i, xb in enumerate(self._eval_batches(x, size)):
                yb = y[i * size:(i + 1) * size].to(self.device, non_blocking=True)
                with self._autocast():
                    out = self.forward(xb).float()
                loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum")
                predicted.append(out.argmax(1))
        classes = (torch.cat(predicted).cpu() if predicted
                   else torch.empty(0, dtype=torch.long))
        n = max(1, x.shape[0])
        return Scores(float((classes == y.cpu()).sum()) / n, float(loss_sum) / n, classes)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
                 ) -> tuple[float, float]:
        """(accuracy, mean loss) on a split, without augmentation."""
        scores = self.score(x, y, batch_size)
        return scores.acc, scores.loss

    @torch.no_grad()
    def inference_ms_per_batch(self, x: torch.Tensor, batch_size: int | None = None) -> float:
        """Mean milliseconds of one forward pass over a batch of `x` (the trial's batch size),
        synchronised on a GPU; one warm-up batch is not counted (Iranfar et al. Table V)."""
        with self._inference():
            batches = list(self._eval_batches(x, batch_size or self.hp.batch_size))
            if not batches:
                return math.nan
            with self._autocast():
                self.forward(batches[0])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            with self._autocast():
                for xb in batches:
                    self.forward(xb)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return 1000.0 * (time.perf_counter() - start) / len(batches)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed trial needs: weights, optimizer state, epoch, hyperparameters."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": self.hp.optimizer,
            "epoch": self.epoch,
            "hp": self.hp.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights and epoch; the optimizer state only when the same optimizer is in
        force (PBT may hand over a checkpoint together with new hyperparameters)."""
        self.model.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        if state.get("optimizer_name") == self.hp.optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = self.hp.lr
                group["weight_decay"] = self.hp.weight_decay
                if "momentum" in group:
                    group["momentum"] = self.hp.momentum
