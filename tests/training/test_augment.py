"""Tests for service.training.augment: batched per-sample affine augmentation and
TrivialAugmentWide."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from service.training.augment import AugmentSpec, augment_batch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

AFFINE_SPECS = [
    AugmentSpec(flip=True),
    AugmentSpec(rotation=20),
    AugmentSpec(shift=True),
    AugmentSpec(zoom=True),
    AugmentSpec(flip=True, rotation=30, shift=True, zoom=True),
]
ALL_SPECS = [*AFFINE_SPECS, AugmentSpec(trivialaugment=True)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, c: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


def test_is_identity() -> None:
    assert AugmentSpec().is_identity
    assert AugmentSpec(rotation=0).is_identity
    for spec in ALL_SPECS:
        assert not spec.is_identity


def test_identity_returns_input_unchanged() -> None:
    x = _batch()
    assert augment_batch(x, AugmentSpec()) is x
    assert augment_batch(x, AugmentSpec(rotation=0), _gen(1)) is x


@pytest.mark.parametrize("rotation", [-5, 181])
def test_rotation_range_validated(rotation: int) -> None:
    with pytest.raises(ValueError, match="rotation must be in"):
        AugmentSpec(rotation=rotation)
    with pytest.raises(TypeError, match="rotation must be an int"):
        AugmentSpec(rotation=1.5)  # type: ignore[arg-type]


def test_rejects_non_image_batch() -> None:
    with pytest.raises(ValueError, match=r"float \(N, C, H, W\)"):
        augment_batch(torch.rand(3, 8, 8), AugmentSpec(flip=True))
    with pytest.raises(ValueError, match=r"float \(N, C, H, W\)"):
        augment_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), AugmentSpec(flip=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", ALL_SPECS, ids=repr)
def test_shape_dtype_device_and_range(spec: AugmentSpec, device: str) -> None:
    for x in (_batch().to(device), _batch(n=5, c=1, h=10, w=14).to(device)):
        out = augment_batch(x, spec, _gen(0))
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, x)


def test_flip_only_mirrors_exactly_per_sample() -> None:
    x = _batch(n=64)
    out = augment_batch(x, AugmentSpec(flip=True), _gen(3))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # p=0.5 per sample, not one coin for the whole batch


def test_affine_path_matches_mirror_when_only_flip_would_apply() -> None:
    # rotation=1 forces the grid_sample path; a 1-degree rotation barely moves the centre pixel
    # of a smooth image, so each output is close to either x or its mirror near the centre.
    ramp = torch.linspace(0, 1, 15).repeat(15, 1)
    x = ramp.expand(32, 1, 15, 15).contiguous()
    out = augment_batch(x, AugmentSpec(flip=True, rotation=1), _gen(0))
    centre = out[:, 0, 7, 2]
    assert torch.all((centre - x[:, 0, 7, 2]).abs().lt(0.02)
                     | (centre - x[:, 0, 7, 12]).abs().lt(0.02))


@pytest.mark.parametrize("spec", AFFINE_SPECS, ids=repr)
def test_constant_image_stays_constant(spec: AugmentSpec) -> None:
    # Border padding: no black corners appear when rotating/shifting/zooming.
    x = torch.full((8, 3, 16, 16), 0.7)
    out = augment_batch(x, spec, _gen(0))
    assert torch.allclose(out, x, atol=1e-5)


def test_shift_moves_content_at_most_ten_percent() -> None:
    x = torch.zeros(64, 1, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = augment_batch(x, AugmentSpec(shift=True), _gen(0))
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    mass = out[:, 0].sum((1, 2))
    cy = (out[:, 0] * ys).sum((1, 2)) / mass
    cx = (out[:, 0] * xs).sum((1, 2)) / mass
    assert float((cy - 10).abs().max()) <= 2.0 + 1e-4
    assert float((cx - 10).abs().max()) <= 2.0 + 1e-4
    assert float((cx - 10).abs().max()) > 1.0  # shifts do happen


def test_rotation_keeps_distance_from_centre() -> None:
    # A dot 5 px right of the centre stays ~5 px from the centre under pure rotation.
    x = torch.zeros(32, 1, 21, 21)
    x[:, :, 10, 15] = 1.0
    out = augment_batch(x, AugmentSpec(rotation=30), _gen(1))
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = out[:, 0].sum((1, 2))
    cy = (out[:, 0] * ys).sum((1, 2)) / mass - 10
    cx = (out[:, 0] * xs).sum((1, 2)) / mass - 10
    radius = torch.sqrt(cx**2 + cy**2)
    assert torch.allclose(radius, torch.full_like(radius, 5.0), atol=0.6)
    angle = torch.rad2deg(torch.atan2(cy, cx)).abs()
    assert float(angle.max()) <= 31.0 and float(angle.max()) > 10.0


@pytest.mark.parametrize("spec", ALL_SPECS, ids=repr)
def test_per_sample_randomness(spec: AugmentSpec) -> None:
    x = _batch(n=1, h=16, w=16).expand(16, 3, 16, 16).contiguous()
    out = augment_batch(x, spec, _gen(0))
    distinct = {o.numpy().tobytes() for o in out}
    assert len(distinct) >= (2 if spec == AugmentSpec(flip=True) else 4)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=repr)
def test_deterministic_with_seeded_generator(spec: AugmentSpec) -> None:
    x = _batch(n=8, h=16, w=16)
    state = torch.get_rng_state()
    a = augment_batch(x, spec, _gen(42))
    b = augment_batch(x, spec, _gen(42))
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert not torch.equal(a, augment_batch(x, spec, _gen(43)))


def test_global_rng_used_without_generator() -> None:
    x = _batch(n=8)
    torch.manual_seed(0)
    a = augment_batch(x, AugmentSpec(rotation=20, zoom=True))
    torch.manual_seed(0)
    assert torch.equal(a, augment_batch(x, AugmentSpec(rotation=20, zoom=True)))


@pytest.mark.parametrize("channels", [1, 3])
def test_trivialaugment_runs_and_stays_in_range(channels: int) -> None:
    x = _batch(n=12, c=channels, h=16, w=16)
    out = augment_batch(x, AugmentSpec(trivialaugment=True, flip=True), _gen(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Went through uint8: values sit on the 1/255 grid.
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)


def test_trivialaugment_rejects_other_channel_counts() -> None:
    with pytest.raises(ValueError, match="1 or 3 channels"):
        augment_batch(_batch(c=2), AugmentSpec(trivialaugment=True), _gen(0))


# Continuous magnitudes (HYPERA's data agent).


@pytest.mark.parametrize(("flags", "magnitudes"), [
    ({"flip": True}, {"flip_prob": 0.5}),
    ({"shift": True}, {"shift_frac": 0.1}),
    ({"zoom": True}, {"zoom_frac": 0.1}),
    ({"flip": True, "rotation": 10, "shift": True}, {"flip_prob": 0.5, "rotation": 10,
                                                     "shift_frac": 0.1}),
])
def test_magnitudes_at_the_flags_settings_give_the_same_images(flags, magnitudes) -> None:
    x = _batch()
    a = augment_batch(x, AugmentSpec(**flags), _gen(3))
    b = augment_batch(x, AugmentSpec(**magnitudes), _gen(3))
    assert torch.equal(a, b)


def test_flip_probability_is_honoured() -> None:
    x = _batch(n=2000, h=4, w=4)
    for p in (0.0, 0.2, 0.9):
        out = augment_batch(x, AugmentSpec(flip_prob=p), _gen(0))
        mirrored = (out != x).flatten(1).any(1).float().mean().item()
        assert mirrored == pytest.approx(p, abs=0.04)


def test_larger_shift_moves_pixels_further() -> None:
    x = _batch(n=64)
    small = (augment_batch(x, AugmentSpec(shift_frac=0.05), _gen(1)) - x).abs().mean()
    large = (augment_batch(x, AugmentSpec(shift_frac=0.4), _gen(1)) - x).abs().mean()
    assert large > small > 0


@pytest.mark.parametrize(("name", "value"), [("flip_prob", 1.5), ("shift_frac", -0.1),
                                             ("zoom_frac", 0.6)])
def test_magnitudes_out_of_range_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        AugmentSpec(**{name: value})


class _CrossDevice(TorchDispatchMode):
    """Records every op that takes tensors on one device and gives tensors on another."""

    def __init__(self) -> None:
        super().__init__()
        self.moves: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        from torch.utils._pytree import tree_leaves as leaves

        def devices(tree: object) -> set[str]:
            return {t.device.type for t in leaves(tree) if isinstance(t, torch.Tensor)}

        ins, outs = devices((args, kwargs)), devices(out)
        if ins and outs and ins != outs:
            self.moves.append(str(func))
        return out


@pytest.mark.parametrize("spec", AFFINE_SPECS, ids=repr)
def test_nothing_crosses_between_host_and_device(spec: AugmentSpec) -> None:
    """The random matrices are made on the batch's device (a "meta" batch stands in for a
    GPU's here): no copy from the host, which on a GPU waits for its queue every step."""
    x = torch.empty(8, 3, 16, 16, device="meta")
    with _CrossDevice() as recorder:
        out = augment_batch(x, spec)
    assert out.device.type == "meta" and out.shape == x.shape
    assert recorder.moves == []
