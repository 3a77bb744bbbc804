"""Tests for service.training.backbones: shapes, reference parameter counts, spec parsing, safe
loading."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from service.training.backbones import (
    BACKBONES,
    BackboneError,
    BackboneSpec,
    BasicBlock,
    CifarResNet18,
    ImageNetResNet18,
    build_backbone,
    count_parameters,
    load_state_dict_file,
    model_size_mb,
)
from tests.fresh import fresh_python

SMALL = 0.125  # width used for every forward pass: keeps the whole file fast on 2 CPU cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _bn_running_stats(model: nn.Module) -> int:
    return sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")
    )


# ------------------------------------------------------------------------------------------
# Forward shapes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 16, 10), (3, 32, 7), (1, 8, 3)])
def test_output_shape(name: str, channels: int, size: int, classes: int) -> None:
    model = build_backbone(f"{name}@{SMALL}", num_classes=classes, in_channels=channels,
                           image_size=size)
    x = torch.randn(2, channels, size, size)
    model.train()
    out = model(x)
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, classes)


# ------------------------------------------------------------------------------------------
# Parameter counts at full width (no forward pass)
# ------------------------------------------------------------------------------------------


def test_efficientnetv2_b0_matches_keras_reference() -> None:
    model = build_backbone("efficientnetv2_b0", num_classes=1000)
    params = count_parameters(model)
    # Keras EfficientNetV2B0 (include_top, 1000 classes) reports 7,200,312 "Total params", which
    # includes BatchNorm moving means/variances; the trainable part is ~7.14M.
    assert abs(params - 7.1e6) / 7.1e6 < 0.03
    assert params == 7_139_704
    assert params + _bn_running_stats(model) == 7_200_312


def test_efficientnetv2_b0_structure() -> None:
    model = build_backbone("efficientnetv2_b0", num_classes=10)
    stages = list(model.features)[1:7]
    assert [len(s) for s in stages] == [1, 2, 2, 3, 5, 8]
    assert [type(s[0]).__name__ for s in stages] == ["_FusedMBConv"] * 3 + ["_MBConv"] * 3
    stem, head = model.features[0], model.features[-1]
    assert stem[0].stride == (2, 2) and stem[0].out_channels == 32
    assert head[0].out_channels == 1280
    # Strides of the first block of each stage: 1, 2, 2, 2, 1, 2 (plus the stride-2 stem).
    strides = [max(m.stride[0] for m in s[0].modules() if isinstance(m, nn.Conv2d))
               for s in stages]
    assert strides == [1, 2, 2, 2, 1, 2]
    # SE squeeze width comes from the block *input* channels * 0.25.
    se = [m for m in model.modules() if type(m).__name__ == "SqueezeExcitation"]
    assert len(se) == 16
    assert (se[0].fc1.in_channels, se[0].fc1.out_channels) == (48 * 4, 12)
    assert (se[1].fc1.in_channels, se[1].fc1.out_channels) == (96 * 4, 24)
    assert (se[3].fc1.in_channels, se[3].fc1.out_channels) == (96 * 6, 24)
    assert (se[4].fc1.in_channels, se[4].fc1.out_channels) == (112 * 6, 28)
    assert isinstance(se[0].activation, nn.SiLU)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.eps == 1e-3 and bn.momentum == 0.1 for bn in bns)
    # Stochastic depth: drop rate 0.2 * b / 21 for block b; dropout 0.2 before the classifier.
    blocks = [b for s in stages for b in s]
    assert len(blocks) == 21
    expected = [0.2 * i / 21 for i in range(21)]
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx(expected)
    assert model.classifier[0].p == 0.2


def test_cifar_resnet18_count() -> None:
    assert count_parameters(build_backbone("resnet18", num_classes=10)) == 11_173_962


# VGG-BN, CIFAR variant, 10 classes.  conv3x3 (with bias) = 9*cin*cout + cout; BN = 2*c:
#   64:  3->64 1,792        64->64 36,928
#   128: 64->128 73,856     128->128 147,584
#   256: 128->256 295,168   256->256 590,080 (x2 in VGG16, x3 in VGG19)
#   512: 256->512 1,180,160 512->512 2,359,808 (x5 in VGG16, x7 in VGG19)
#   VGG16 convs: 1,792+36,928+73,856+147,584+295,168+2*590,080+1,180,160+5*2,359,808 = 14,714,688
#   VGG16 BN: 2*(2*64+2*128+3*256+6*512) = 8,448; Linear 512->10: 5,130; total 14,728,266
#   VGG19 = VGG16 + one 256->256 conv + two 512->512 convs + BN 2*(256+2*512)
#         = 14,728,266 + 590,080 + 4,719,616 + 2,560 = 20,040,522
@pytest.mark.parametrize(("name", "expected"), [("vgg16", 14_728_266), ("vgg19", 20_040_522)])
def test_vgg_counts(name: str, expected: int) -> None:
    assert count_parameters(build_backbone(name, num_classes=10)) == expected


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("width", [0.5, 0.25])
def test_width_shrinks_roughly_quadratically(name: str, width: float) -> None:
    full = count_parameters(build_backbone(name, num_classes=10))
    slim = count_parameters(build_backbone(BackboneSpec(name, width), num_classes=10))
    # EfficientNet rounds channels up to multiples of 8, so it shrinks a bit less.
    assert 0.9 <= slim / full / width**2 <= 1.3


def test_in_channels_and_classes_adapt_stem_and_head() -> None:
    one = count_parameters(build_backbone("resnet18", num_classes=10, in_channels=1))
    assert count_parameters(build_backbone("resnet18", num_classes=10)) - one == 2 * 9 * 64
    hundred = count_parameters(build_backbone("resnet18", num_classes=100))
    assert hundred - 11_173_962 == 90 * 513
    one = count_parameters(build_backbone("resnet18_imagenet", num_classes=10, in_channels=1))
    assert 11_181_642 - one == 2 * 49 * 64


# ------------------------------------------------------------------------------------------
# ResNet-18: CIFAR stem (resnet18) and ImageNet stem (resnet18_imagenet)
# ------------------------------------------------------------------------------------------


def _resnet18_keys() -> list[str]:
    """State-dict keys of ``resnet18`` as saved before the ImageNet variant existed."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{k}" for k in bn)]
    for layer in range(1, 5):
        for block in range(2):
            pre = f"layer{layer}.{block}"
            keys += [f"{pre}.conv1.weight", *(f"{pre}.bn1.{k}" for k in bn)]
            keys += [f"{pre}.conv2.weight", *(f"{pre}.bn2.{k}" for k in bn)]
            if layer > 1 and block == 0:
                keys += [f"{pre}.downsample.0.weight", *(f"{pre}.downsample.1.{k}" for k in bn)]
    return [*keys, "fc.weight", "fc.bias"]


def test_resnet18_state_dict_keys_unchanged() -> None:
    state = CifarResNet18(10, 3, 1.0).state_dict()
    assert len(_resnet18_keys()) == 122
    assert list(state.keys()) == _resnet18_keys()
    assert state["conv1.weight"].shape == (64, 3, 3, 3)
    assert state["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert state["fc.weight"].shape == (10, 512)
    # The ImageNet variant only adds a parameter-free max-pool: same keys, bigger stem kernel.
    imagenet = ImageNetResNet18(10, 3, 1.0).state_dict()
    assert list(imagenet.keys()) == _resnet18_keys()
    assert imagenet["conv1.weight"].shape == (64, 3, 7, 7)


def test_resnet18_imagenet_matches_torchvision() -> None:
    model = build_backbone("resnet18_imagenet", num_classes=10)
    reference = torchvision.models.resnet18(num_classes=10)
    assert isinstance(model, ImageNetResNet18)
    assert count_parameters(model) == count_parameters(reference) == 11_181_642
    assert abs(count_parameters(model) - 11e6) / 11e6 < 0.03  # "about 11 M" (Pham 2024)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    # Layer for layer the same function: torchvision's weights give torchvision's outputs.
    model.load_state_dict(theirs)
    model.eval()
    reference.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_resnet18_imagenet_stem_and_stages() -> None:
    model = build_backbone(f"resnet18_imagenet@{SMALL}", num_classes=10)
    assert [name for name, _ in model.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"
    ]
    conv = model.conv1
    assert isinstance(conv, nn.Conv2d)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert conv.out_channels == 8 and conv.bias is None  # 64 * 0.125
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.relu, nn.ReLU)
    pool = model.maxpool
    assert isinstance(pool, nn.MaxPool2d)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert all(type(b) is BasicBlock for s in stages for b in s)
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [s[1].conv1.stride for s in stages] == [(1, 1)] * 4
    assert [s[-1].conv2.out_channels for s in stages] == [8, 16, 32, 64]
    assert model.fc.in_features == 64
    # The CIFAR variant shares the implementation and differs only in the stem.
    cifar = build_backbone(f"resnet18@{SMALL}", num_classes=10)
    assert type(cifar).__bases__ == type(model).__bases__ != (nn.Module,)
    assert all(type(b) is BasicBlock for b in cifar.layer1)
    c = cifar.conv1
    assert (c.kernel_size, c.stride, c.padding) == ((3, 3), (1, 1), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())


@pytest.mark.parametrize(
    ("channels", "size", "stem_size"), [(3, 32, 8), (1, 28, 7), (1, 8, 2)]
)
def test_resnet18_imagenet_small_inputs(channels: int, size: int, stem_size: int) -> None:
    model = build_backbone(f"resnet18_imagenet@{SMALL}", num_classes=10, in_channels=channels,
                           image_size=size)
    x = torch.randn(2, channels, size, size)
    model.train()
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        assert stem.shape[-2:] == (stem_size, stem_size)  # the stem downsamples by 4
        features = model.layer4(model.layer3(model.layer2(model.layer1(stem))))
        assert features.shape[-2:] == (max(1, size // 32),) * 2
        assert model(x).shape == (2, 10)


def test_resnet18_imagenet_width_spec() -> None:
    spec = BackboneSpec.parse("resnet18_imagenet@0.25")
    assert (spec.name, spec.width) == ("resnet18_imagenet", 0.25)
    assert str(spec) == "resnet18_imagenet@0.25"
    model = build_backbone(spec, num_classes=10, in_channels=1, image_size=28)
    assert isinstance(model, ImageNetResNet18)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 16
    assert model.fc.in_features == 128
    assert count_parameters(build_backbone("resnet18_imagenet@0.25", num_classes=10)) == 703_386
    assert model.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


# ------------------------------------------------------------------------------------------
# BackboneSpec
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "width", "canonical"),
    [
        ("vgg16", "vgg16", 1.0, "vgg16"),
        ("vgg16@0.125", "vgg16", 0.125, "vgg16@0.125"),
        ("resnet18@0.25", "resnet18", 0.25, "resnet18@0.25"),
        (" ResNet18 @ 0.25 ", "resnet18", 0.25, "resnet18@0.25"),
        ("resnet18_imagenet", "resnet18_imagenet", 1.0, "resnet18_imagenet"),
        ("ResNet18-ImageNet@0.5", "resnet18_imagenet", 0.5, "resnet18_imagenet@0.5"),
        ("vgg19@1", "vgg19", 1.0, "vgg19"),
        ("vgg19@2", "vgg19", 2.0, "vgg19@2"),
        ("vgg19@4", "vgg19", 4.0, "vgg19@4"),
        ("efficientnetv2-b0@0.5", "efficientnetv2_b0", 0.5, "efficientnetv2_b0@0.5"),
    ],
)
def test_spec_parse_good(text: str, name: str, width: float, canonical: str) -> None:
    spec = BackboneSpec.parse(text)
    assert (spec.name, spec.width) == (name, width)
    assert str(spec) == canonical
    assert BackboneSpec.parse(str(spec)) == spec


def test_spec_round_trips_odd_width() -> None:
    spec = BackboneSpec("vgg16", 1 / 3)
    assert BackboneSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("vgg-16", "did you mean 'vgg16'?"),
        ("VGG166", "did you mean 'vgg16'?"),
        ("resnet", "did you mean 'resnet18'?"),
        ("resnet18_imgnet", "did you mean 'resnet18_imagenet'?"),
        ("efficientnet_b0", "did you mean 'efficientnetv2_b0'?"),
        ("alexnet", "accepted: efficientnetv2_b0, vgg16, vgg19, resnet18, resnet18_imagenet"),
        ("", "unknown name"),
        ("vgg16@0", "(0, 4]"),
        ("vgg16@-0.5", "(0, 4]"),
        ("vgg16@abc", "expected a number"),
        ("vgg16@", "expected a number"),
        ("vgg16@4.5", "(0, 4]"),
        ("vgg16@nan", "(0, 4]"),
        ("vgg16@inf", "(0, 4]"),
        ("vgg16@0.5@2", "expected a number"),
    ],
)
def test_spec_parse_bad(text: str, fragment: str) -> None:
    with pytest.raises(BackboneError) as info:
        BackboneSpec.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
    if "@" in text and "number" not in fragment:
        assert message.startswith("backbone width:")


def test_spec_direct_construction_is_validated() -> None:
    with pytest.raises(BackboneError, match="width"):
        BackboneSpec("vgg16", 0)
    with pytest.raises(BackboneError, match="width"):
        BackboneSpec("vgg16", True)  # type: ignore[arg-type]
    assert BackboneSpec("VGG16", 1) == BackboneSpec("vgg16")


def test_numpy_scalars_from_search_spaces_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    spec = BackboneSpec("vgg16", np.float64(0.125))
    assert type(spec.width) is float and str(spec) == "vgg16@0.125"
    model = build_backbone(spec, num_classes=np.int64(3), in_channels=np.int64(1))
    assert model.eval()(torch.randn(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_classes": 0}, "num_classes"), ({"num_classes": 10, "in_channels": 0}, "in_channels"),
     ({"num_classes": 10, "image_size": 0}, "image_size"), ({"num_classes": 2.5}, "num_classes")],
)
def test_build_backbone_rejects_bad_arguments(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(BackboneError, match=field):
        build_backbone("resnet18@0.125", **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------


def test_model_size_mb() -> None:
    tiny = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5))
    # 55 + 10 float32 params, 10 float32 running stats, one int64 counter.
    assert model_size_mb(tiny) == pytest.approx((65 * 4 + 10 * 4 + 8) / 2**20)
    model = build_backbone("resnet18", num_classes=10)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    expected = ((11_173_962 + _bn_running_stats(model)) * 4 + n_bn * 8) / 2**20
    assert model_size_mb(model) == pytest.approx(expected)
    assert 42 < model_size_mb(model) < 43
    assert model_size_mb(model.half()) == pytest.approx(
        ((11_173_962 + _bn_running_stats(model)) * 2 + n_bn * 8) / 2**20
    )


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_state_dict_round_trip(tmp_path: Path, name: str, wrapper: str | None) -> None:
    model = build_backbone(f"{name}@{SMALL}", num_classes=5, in_channels=1, image_size=16)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, 16, 16))  # move BN running statistics away from 0/1
    state = model.state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)

    fresh = build_backbone(f"{name}@{SMALL}", num_classes=5, in_channels=1, image_size=16)
    load_state_dict_file(fresh, str(path))
    model.eval()
    fresh.eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_load_strips_data_parallel_prefix(tmp_path: Path) -> None:
    model = build_backbone("resnet18@0.125", num_classes=3)
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    fresh = build_backbone("resnet18@0.125", num_classes=3)
    load_state_dict_file(fresh, path)
    assert torch.equal(fresh.fc.weight, model.fc.weight)


def test_load_missing_file(tmp_path: Path) -> None:
    model = build_backbone("resnet18@0.125", num_classes=3)
    with pytest.raises(BackboneError, match="does not exist"):
        load_state_dict_file(model, tmp_path / "nope.pt")
    with pytest.raises(BackboneError, match="directory"):
        load_state_dict_file(model, tmp_path)


def test_load_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackboneError, match="checkpoint") as info:
        load_state_dict_file(build_backbone("resnet18@0.125", num_classes=3), path)
    assert "\n" not in str(info.value)


class _Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("nested", [False, True])
def test_load_refuses_pickled_code(tmp_path: Path, nested: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload: object = _Exploit(marker)
    torch.save({"state_dict": payload} if nested else payload, path)
    model = build_backbone("resnet18@0.125", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BackboneError, match="weights_only") as info:
        load_state_dict_file(model, path)
    assert "system" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_load_shape_mismatch_names_key(tmp_path: Path) -> None:
    path = tmp_path / "ten.pt"
    torch.save(build_backbone("resnet18@0.125", num_classes=10).state_dict(), path)
    with pytest.raises(BackboneError) as info:
        load_state_dict_file(build_backbone("resnet18@0.125", num_classes=5), path)
    message = str(info.value)
    assert "'fc.weight'" in message and "(10, 64)" in message and "(5, 64)" in message
    with pytest.raises(BackboneError, match="'conv1.weight'"):
        load_state_dict_file(build_backbone("resnet18@0.25", num_classes=10), path, strict=False)


def test_load_strict_and_non_strict(tmp_path: Path) -> None:
    model = build_backbone("vgg16@0.125", num_classes=4)
    state = model.state_dict()
    del state["classifier.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    fresh = build_backbone("vgg16@0.125", num_classes=4)
    with pytest.raises(BackboneError, match="missing key.*'classifier.weight'.*'extra.weight'"):
        load_state_dict_file(fresh, path)
    load_state_dict_file(fresh, path, strict=False)
    assert torch.equal(fresh.features[0].weight, model.features[0].weight)


def test_load_rejects_non_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(BackboneError, match="expected a state dict"):
        load_state_dict_file(build_backbone("resnet18@0.125", num_classes=3), path)


def test_no_suggestion_for_unrelated_name() -> None:
    with pytest.raises(BackboneError) as info:
        BackboneSpec.parse("alexnet")
    assert "did you mean" not in str(info.value)


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(BackboneError, match="cannot read"):
        load_state_dict_file(build_backbone("resnet18@0.125", num_classes=3), path)


# --------------------------------------------------------------------------- vgg16_layers


def test_vgg16_layers_defaults_are_the_original_cifar_vgg16() -> None:
    model = build_backbone("vgg16_layers", num_classes=100, image_size=32)
    assert count_parameters(model) == 15_037_092  # 13 convs + BN, 512 -> 512 -> 100 head
    assert 57.0 < model_size_mb(model) < 58.0  # Iranfar et al. Table V: "60 MB"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512,
                                               512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_vgg16_layers_builds_every_layer_from_the_config() -> None:
    layers = {"conv1_filters": 32, "conv1_kernel": 5, "conv1_stride": 2, "pool1_size": 3,
              "conv13_filters": 16, "dense_units": 128}
    model = build_backbone("vgg16_layers@0.5", num_classes=10, in_channels=1,
                           image_size=16, layers=layers)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 16 and convs[0].kernel_size == (5, 5)  # width 0.5
    assert convs[0].stride == (2, 2) and convs[-1].out_channels == 8
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    # 16 -> stride 2: 8 -> pool 3: 2 -> pool 2: 1; the last two pools are skipped (1 pixel)
    assert [p.kernel_size for p in pools] == [3, 2]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert (linears[0].in_features, linears[0].out_features) == (8, 64)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert model.choices["conv1_kernel"] == 5 and model.choices["dense_units"] == 64


def test_vgg16_layers_refuses_bad_layers_and_fixed_backbones_refuse_layers() -> None:
    with pytest.raises(BackboneError, match="conv1_kernel must be an integer in"):
        build_backbone("vgg16_layers", num_classes=10, layers={"conv1_kernel": 0})
    with pytest.raises(BackboneError, match="unknown layer hyperparameter 'conv14_filters'"):
        build_backbone("vgg16_layers", num_classes=10, layers={"conv14_filters": 8})
    with pytest.raises(BackboneError, match="need backbone vgg16_layers"):
        build_backbone("vgg16", num_classes=10, layers={"conv1_filters": 8})


# --------------------------------------------------------------------------- your own model


def test_import_path_backbone_is_called_with_the_data_shape_and_width() -> None:
    from service.training.backbones import check_backbone

    model = build_backbone("tests.user_models:small_cnn@0.5", num_classes=7, in_channels=1,
                           image_size=12)
    assert model[0].in_channels == 1 and model[0].out_channels == 8  # round(16 * 0.5)
    assert model(torch.zeros(3, 1, 12, 12)).shape == (3, 7)
    check_backbone("tests.user_models:small_cnn", num_classes=5, in_channels=3, image_size=8)
    assert str(BackboneSpec.parse("tests.user_models:small_cnn@0.5")) == \
        "tests.user_models:small_cnn@0.5"


def test_torchvision_models_by_registry_name_take_grey_images() -> None:
    model = build_backbone("torchvision:resnet18", num_classes=4, in_channels=1, image_size=16)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 4)
    assert count_parameters(model) == count_parameters(
        torchvision.models.resnet18(num_classes=4))


@pytest.mark.parametrize(("name", "message"), [
    ("torchvision:resnet81", "no classification model 'resnet81' (did you mean 'resnet18'?)"),
    ("torchvision:resnet18@0.5", "no width multiplier; drop '@0.5'"),
    ("tests.user_models:not_a_builder", "has no callable 'not_a_builder'"),
    ("nopkg.models:build", "cannot import 'nopkg.models'"),
    ("tests.user_models:wrong_output", "output is (2, 11) for a batch of 2, expected (2, 10)"),
    ("bad path:x", "is not an import path like"),
    ("pkg.my_wide:build", "holds '_w' or '__'"),
])
def test_bad_user_backbones_fail_in_one_line(name: str, message: str) -> None:
    from service.training.backbones import check_backbone

    with pytest.raises(BackboneError) as info:
        check_backbone(name, num_classes=10, in_channels=3, image_size=8)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_blocks_written_here_are_torchvisions() -> None:
    """BasicBlock, Conv2dNormActivation, SqueezeExcitation and StochasticDepth are written in
    service.training.backbones so a trial's process need not import torchvision; for the same seed
    they hold torchvision's state-dict keys and initial weights and compute its outputs (in
    training mode, stochastic depth's draws included)."""
    from torchvision.models.resnet import BasicBlock as TvBasicBlock
    from torchvision.ops import Conv2dNormActivation as TvConv
    from torchvision.ops import SqueezeExcitation as TvSE
    from torchvision.ops import StochasticDepth as TvSD

    from service.training import backbones as ours

    def down() -> nn.Module:
        return nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))

    pairs = [
        (lambda: TvBasicBlock(8, 16, 2, down()), lambda: ours.BasicBlock(8, 16, 2, down())),
        (lambda: TvConv(8, 16, 3, 2, groups=8, activation_layer=nn.SiLU),
         lambda: ours.Conv2dNormActivation(8, 16, 3, 2, groups=8, activation_layer=nn.SiLU)),
        (lambda: TvConv(8, 16, 1, norm_layer=None, activation_layer=None),
         lambda: ours.Conv2dNormActivation(8, 16, 1, norm_layer=None, activation_layer=None)),
        (lambda: TvSE(8, 2, activation=nn.SiLU), lambda: ours.SqueezeExcitation(8, 2, nn.SiLU)),
        (lambda: TvSD(0.3, "row"), lambda: ours.StochasticDepth(0.3, "row")),
    ]
    x = torch.randn(6, 8, 9, 9)
    for theirs, mine in pairs:
        torch.manual_seed(1)
        a = theirs()
        torch.manual_seed(1)
        b = mine()
        assert list(a.state_dict()) == list(b.state_dict())
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
        torch.manual_seed(2)
        ya = a.train()(x.clone())
        torch.manual_seed(2)
        yb = b.train()(x.clone())
        assert torch.equal(ya, yb), type(b).__name__


def test_a_trial_process_does_not_import_torchvision() -> None:
    """Importing the trainable and building a backbone leaves torchvision unimported: its
    import (torch._dynamo, sympy) cost each fresh trial process about 1.6 s."""
    code = ("import sys, service.backends.tune.trainable\n"
            "from service.training.backbones import build_backbone\n"
            "for b in ('resnet18', 'efficientnetv2_b0', 'vgg16'):\n"
            "    build_backbone(b + '@0.0625', num_classes=3, image_size=16)\n"
            "print('torchvision' in sys.modules)")
    assert fresh_python(code) == "False"


def test_checking_a_config_s_backbones_does_not_import_torch() -> None:
    """The CLI validates a config before Ray starts and needs nothing else of torch (about
    2.5 s of CPU before each command's run): built-in backbone names are checked by
    service.core.backbone_spec, the same objects service.training.backbones exports."""
    import service.core.backbone_spec as spec
    import service.training.backbones as backbones

    assert backbones.BackboneSpec is spec.BackboneSpec
    assert backbones.BackboneError is spec.BackboneError
    code = ("import sys, tempfile\n"
            "from service.core.config import build_config\n"
            "from service.core.presets import PRESETS\n"
            "build_config({**PRESETS['table9-cpu'], 'storage': tempfile.mkdtemp()})\n"
            "try:\n"
            "    build_config({**PRESETS['cpu-small'], 'backbones': ['vgg17'],\n"
            "                  'storage': tempfile.mkdtemp()})\n"
            "except Exception as err:\n"
            "    print('vgg16' in str(err) and 'vgg17' in str(err))\n"
            "print('torch' in sys.modules)")
    assert fresh_python(code).split() == ["True", "False"]
