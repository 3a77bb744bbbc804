"""Random per-sample augmentation of image batches, on the batch's own device.

Flip, rotation, shift and zoom are composed into one 2x3 affine matrix per sample and applied
with a single ``affine_grid`` + ``grid_sample`` call. torchvision.transforms.v2 is the project's
augmentation library, but a v2 transform draws *one* parameter set per call, so per-sample
randomness would need a Python loop over the batch (slow on CPU, one kernel launch per image on
the GPU); the hand-batched affine gives every sample its own parameters in one call on any
device. TrivialAugmentWide is used from v2 as is (per-sample loop; slower but exact).

Out-of-image pixels use ``padding_mode="border"`` (edge replication), which is Keras'
``ImageDataGenerator`` default ``fill_mode="nearest"``; it avoids black corners that would give
the network an easy cue for "this image was rotated".
"""

from __future__ import annotations

import math
import numbers
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["AugmentSpec", "augment_batch"]

_SHIFT_RANGE = 0.1  # Keras width_shift_range / height_shift_range
_ZOOM_RANGE = 0.1  # Keras zoom_range=0.1: factors in [0.9, 1.1]


@dataclass(frozen=True)
class AugmentSpec:
    """Which random augmentations to apply; hashable so it can sit in a Tune config or cache key.

    ``trivialaugment=True`` applies torchvision's TrivialAugmentWide *instead of* the affine
    flags (flip/rotation/shift/zoom are then ignored).
    """

    flip: bool = False  # random horizontal flip, p=0.5
    rotation: int = 0  # max degrees, uniform in [-rotation, rotation]; EMERALD-O uses 0/10/20/30
    shift: bool = False  # random translation up to 0.1 of width/height (Keras-style)
    zoom: bool = False  # random zoom, x and y factors independently in [0.9, 1.1] (Keras-style)
    trivialaugment: bool = False  # torchvision TrivialAugmentWide instead of the above
    # Continuous magnitudes (HYPERA's data agent); above 0 each replaces its flag's
    # fixed setting: flip probability, shift fraction, zoom half-range.
    flip_prob: float = 0.0
    shift_frac: float = 0.0
    zoom_frac: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rotation, bool) or not isinstance(self.rotation, numbers.Integral):
            raise TypeError(f"rotation must be an int number of degrees, got {self.rotation!r}")
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        for name, high in (("flip_prob", 1.0), ("shift_frac", 0.5), ("zoom_frac", 0.5)):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= high:
                raise ValueError(f"{name} must be in [0, {high:g}], got {value}")

    @property
    def p_flip(self) -> float:
        """The flip probability in force: flip_prob, else 0.5 with flip."""
        return float(self.flip_prob) if self.flip_prob > 0 else (0.5 if self.flip else 0.0)

    @property
    def shift_range(self) -> float:
        """The max shift fraction in force: shift_frac, else 0.1 with shift."""
        return float(self.shift_frac) if self.shift_frac > 0 else (
            _SHIFT_RANGE if self.shift else 0.0)

    @property
    def zoom_range(self) -> float:
        """The zoom half-range in force: zoom_frac, else 0.1 with zoom."""
        return float(self.zoom_frac) if self.zoom_frac > 0 else (
            _ZOOM_RANGE if self.zoom else 0.0)

    @property
    def is_identity(self) -> bool:
        """True when no augmentation is enabled, so :func:`augment_batch` returns x as is."""
        return not (self.p_flip > 0 or self.rotation > 0 or self.shift_range > 0
                    or self.zoom_range > 0 or self.trivialaugment)


def augment_batch(
    x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) in [0, 1] with fresh random parameters per sample.

    Random numbers come from ``generator`` (the global RNG of ``x``'s device when None) and
    the per-sample matrices are built on the generator's device: with a generator on
    ``x.device`` nothing crosses between host and device (on a GPU a copy of a CPU tensor
    waits for the GPU's queue). A seeded generator reproduces the result. Returns a new
    tensor of the same shape, dtype and device, or ``x`` itself for an identity spec or an
    empty batch. TrivialAugmentWide draws on the CPU (torchvision's v2 uses the global CPU
    RNG): give it a CPU generator.
    """
    if spec.is_identity:
        return x
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"augment_batch expects a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        return x
    if spec.trivialaugment:
        return _trivialaugment(x, generator)
    if spec.rotation == 0 and spec.shift_range == 0 and spec.zoom_range == 0:
        # Flip only: exact mirror without interpolation error, and cheaper than grid_sample.
        mirror = _rand(x.shape[0], generator, x.device) < spec.p_flip
        return torch.where(mirror.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    theta = _affine_matrices(spec, x.shape[0], x.shape[-2], x.shape[-1], generator, x.device)
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniform [0, 1) float32 numbers from ``generator``, on its device, or from the
    global RNG of ``device``."""
    return torch.rand(n, generator=generator,
                      device=generator.device if generator is not None else device)


def _affine_matrices(
    spec: AugmentSpec, n: int, height: int, width: int, generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-sample (n, 2, 3) ``affine_grid`` matrices mapping output to input coordinates.

    The content is flipped, rotated, zoomed and shifted about the image centre. The composition
    is done in pixel units (so rotation stays a rotation on non-square images) and converted to
    the normalised [-1, 1] coordinates ``affine_grid`` uses. Built on the generator's
    device (``device`` without one).
    """
    device = generator.device if generator is not None else torch.device(device)

    def rand() -> torch.Tensor:
        return _rand(n, generator, device)

    ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
    p_flip = spec.p_flip
    flip = torch.where(rand() < p_flip, -ones, ones) if p_flip > 0 else ones
    angle = (
        (2.0 * rand() - 1.0) * math.radians(spec.rotation) if spec.rotation > 0 else zeros
    )
    lo, hi = 1.0 - spec.zoom_range, 1.0 + spec.zoom_range
    if spec.zoom_range > 0:
        zoom_x = lo + (hi - lo) * rand()
        zoom_y = lo + (hi - lo) * rand()
    else:
        zoom_x = zoom_y = ones
    shift = spec.shift_range
    if shift > 0:
        # Fraction of the side in [-shift, shift]; the normalised span of a side is 2.
        shift_x = 2.0 * shift * (2.0 * rand() - 1.0)
        shift_y = 2.0 * shift * (2.0 * rand() - 1.0)
    else:
        shift_x = shift_y = zeros

    cos, sin = torch.cos(angle), torch.sin(angle)
    # Inverse map in pixel units: p_in = Flip @ Rot(-angle) @ Zoom^-1 @ (p_out - shift).
    a = flip * cos / zoom_x
    b = flip * sin / zoom_y
    c = -sin / zoom_x
    d = cos / zoom_y
    # Pixel -> normalised units: conjugate by diag(W/2, H/2).
    aspect = width / height
    m00, m01 = a, b / aspect
    m10, m11 = c * aspect, d
    tx = -(m00 * shift_x + m01 * shift_y)
    ty = -(m10 * shift_x + m11 * shift_y)
    return torch.stack(
        [torch.stack([m00, m01, tx], dim=-1), torch.stack([m10, m11, ty], dim=-1)], dim=1
    )


@lru_cache(maxsize=1)
def _trivial_augment() -> Any:
    """torchvision's TrivialAugmentWide, imported on first use: torchvision's import costs a
    fresh trial process about 1.6 s, and only this policy needs it."""
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide()


def _trivialaugment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """TrivialAugmentWide per sample on uint8 copies; reproducible via ``generator``.

    v2 draws its parameters from the global CPU RNG, so with a generator we fork that RNG and
    seed it from the generator, leaving the caller's global RNG state untouched.
    """
    if x.shape[1] not in (1, 3):
        raise ValueError(f"trivialaugment needs 1 or 3 channels, got {x.shape[1]}")
    images = (x.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    if generator is None:
        ctx = nullcontext()
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        ctx = torch.random.fork_rng(devices=[])
    with ctx:
        if generator is not None:
            torch.manual_seed(seed)
        out = torch.stack([_trivial_augment()(img) for img in images])
    return out.to(x.dtype).div_(255.0)
