"""Image backbones for the tuning service: EfficientNetV2-B0, VGG16/VGG19 and two ResNet-18s.

All models are built from scratch (no pretrained weights: the service runs offline), accept any
number of input channels and classes, and take a width multiplier so that trials and tests can
use slimmer variants.  Full width (1.0) is the reference architecture.

Design choices, documented once here:

* EfficientNetV2-B0 follows the Keras reference ``keras/applications/efficientnet_v2.py``
  ("efficientnetv2-b0", width/depth coefficients 1.0/1.0) block for block: same stages,
  SE squeeze width computed from the block *input* channels, SiLU, dropout 0.2 before the
  classifier, stochastic depth with drop rate rising linearly from 0 to 0.2 over the blocks
  (survival probability 1.0 -> 0.8), filter rounding to multiples of 8 (Keras ``round_filters``,
  i.e. the reference ``_make_divisible`` without the "10 % guard").  BatchNorm uses eps=1e-3 (the
  Keras default) and torch momentum 0.1, which *is* Keras ``momentum=0.9`` (Keras keeps 0.9 of
  the old running statistic, torch weights the new batch by ``momentum``).  TF "same" padding is
  asymmetric for stride 2; we use the usual symmetric ``padding=k//2`` (same output sizes, same
  parameters; as torchvision does).  With 1000 classes the model has 7,139,704 trainable
  parameters, plus 60,608 BatchNorm running statistics: 7,200,312 in all, exactly the
  "Total params" Keras reports for ``EfficientNetV2B0(include_preprocessing=False)`` - Keras
  counts moving means/variances as (non-trainable) params, hence "about 7.1M" here.
* VGG16/VGG19 (configurations D and E) use the common CIFAR variant: BatchNorm after each conv
  (vgg16_bn-style, because plain VGG is notoriously hard to train from scratch without it), the
  five 2x2 max-pools (a pool is skipped when the feature map is already 1 pixel high or wide, so
  8x8 and 16x16 inputs work), global average pooling and a single ``Linear(512*w, classes)``
  instead of the 4096-4096 ImageNet head, which would dwarf the conv stack on small images.
* ResNet-18 comes twice, sharing one implementation with torchvision's ``BasicBlock`` and
  differing only in the stem.  ``resnet18`` uses the CIFAR stem (3x3 conv, stride 1, no
  max-pool); full width with 10 classes has 11,173,962 parameters.  ``resnet18_imagenet`` uses
  the ImageNet stem of Pham 2024, section 3.1 (7x7 conv, stride 2, BN, ReLU, 3x3 max-pool
  with stride 2), i.e. torchvision's ``resnet18`` layer for layer: 11,181,642 parameters with 10
  classes.  Its stem downsamples by 4 and the whole net by 32, so small images (8x8 digits,
  28x28 Fashion-MNIST) end as 1x1 maps; adaptive pooling keeps every size >= 1 working.
* ``vgg16_layers`` is VGG-16 with every layer set by the trial config (Iranfar et al.: per
  conv filters, kernel, stride; per pool its size; the dense layer's units), the original's
  values where a layer is not searched: 15,037,092 parameters and 57.4 MB with 100 classes
  on 32x32 inputs, the "60 MB" Iranfar et al. Table V gives the original. Its head flattens
  the last map (sized from ``image_size``) into the dense layer, as the CIFAR VGG-16 does.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch
from torch import nn

from service.core.api import did_you_mean, import_path
from service.core.backbone_spec import (
    BACKBONES,
    LAYERED,
    TORCHVISION,
    BackboneError,
    BackboneSpec,
    _format_width,
    is_user_backbone,
)

__all__ = [
    "BACKBONES",
    "VGG",
    "BackboneError",
    "BackboneSpec",
    "CifarResNet18",
    "LayeredVGG16",
    "EfficientNetV2B0",
    "ImageNetResNet18",
    "build_backbone",
    "count_parameters",
    "load_state_dict_file",
    "model_size_mb",
]



# --------------------------------------------------------------------------------------------
# Building blocks with torchvision's module layout (state-dict keys, creation order, hence the
# same initial weights for a seed), written here so that a trial's fresh worker process need
# not import torchvision: its import pulls in torch._dynamo and costs about 1.6 s of CPU per
# process (issue: time goes into training).
# --------------------------------------------------------------------------------------------


class Conv2dNormActivation(nn.Sequential):
    """Conv ("same" padding, bias only without a norm) -> norm -> activation, as children
    '0', '1', '2' (torchvision.ops.Conv2dNormActivation's layout)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2,
                                             groups=groups, bias=norm_layer is None)]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): input x sigmoid(fc2(act(fc1(avgpool(x)))))."""

    def __init__(self, channels: int, squeeze: int,
                 activation: Callable[..., nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class StochasticDepth(nn.Module):
    """Drops a residual branch per sample with probability p while training and rescales
    the kept ones by 1 / (1 - p) (Huang et al. 2016, torchvision's "row" mode)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or mode != "row":
            raise ValueError(f"stochastic depth: p in [0, 1] and mode 'row', got {p}, {mode}")
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        noise.bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (He et al. 2016; torchvision's
    BasicBlock: conv1, bn1, relu, conv2, bn2, downsample)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + identity)


# --------------------------------------------------------------------------------------------
# EfficientNetV2-B0
# --------------------------------------------------------------------------------------------

# (fused, expand_ratio, kernel, stride, in_channels, out_channels, repeats, se_ratio), from the
# Keras reference DEFAULT_BLOCKS_ARGS["efficientnetv2-b0"].
_EFFNETV2_B0_STAGES: tuple[tuple[bool, int, int, int, int, int, int, float], ...] = (
    (True, 1, 3, 1, 32, 16, 1, 0.0),
    (True, 4, 3, 2, 16, 32, 2, 0.0),
    (True, 4, 3, 2, 32, 48, 2, 0.0),
    (False, 4, 3, 2, 48, 96, 3, 0.25),
    (False, 6, 3, 1, 96, 112, 5, 0.25),
    (False, 6, 3, 2, 112, 192, 8, 0.25),
)
_EFFNET_STEM = 32
_EFFNET_HEAD = 1280
_EFFNET_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.1)


def _make_divisible(channels: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``channels`` to the nearest multiple of ``divisor`` (Keras ``round_filters``)."""
    min_value = min_value or divisor
    return max(min_value, int(channels + divisor / 2) // divisor * divisor)



class _ResidualBlock(nn.Module):
    """An EfficientNet block: `self.block`, plus a stochastic-depth residual when the shape
    allows (stride 1, same width)."""

    block: nn.Module
    use_residual: bool
    stochastic_depth: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out


class _FusedMBConv(_ResidualBlock):
    """Fused-MBConv: kxk expand conv (or a single kxk conv when expand_ratio is 1) + 1x1 project."""

    def __init__(
        self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop: float
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        act = nn.SiLU
        if expand != 1:
            hidden = cin * expand
            self.block = nn.Sequential(
                Conv2dNormActivation(cin, hidden, kernel, stride, norm_layer=_EFFNET_BN,
                                     activation_layer=act),
                Conv2dNormActivation(hidden, cout, 1, norm_layer=_EFFNET_BN,
                                     activation_layer=None),
            )
        else:  # the reference keeps the activation after the single conv in this case
            self.block = nn.Sequential(
                Conv2dNormActivation(cin, cout, kernel, stride, norm_layer=_EFFNET_BN,
                                     activation_layer=act),
            )
        self.stochastic_depth = StochasticDepth(drop, "row")



class _MBConv(_ResidualBlock):
    """MBConv: 1x1 expand, depthwise kxk, squeeze-excitation, 1x1 linear projection."""

    def __init__(
        self, cin: int, cout: int, expand: int, kernel: int, stride: int, se_ratio: float,
        drop: float,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(Conv2dNormActivation(cin, hidden, 1, norm_layer=_EFFNET_BN,
                                               activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(hidden, hidden, kernel, stride, groups=hidden,
                                           norm_layer=_EFFNET_BN, activation_layer=nn.SiLU))
        if 0 < se_ratio <= 1:
            squeeze = max(1, int(cin * se_ratio))  # from the block *input* width, as in Keras
            layers.append(SqueezeExcitation(hidden, squeeze, activation=nn.SiLU))
        layers.append(Conv2dNormActivation(hidden, cout, 1, norm_layer=_EFFNET_BN,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop, "row")



class EfficientNetV2B0(nn.Module):
    """EfficientNetV2-B0 (Tan & Le 2021) as in the Keras reference; see the module docstring."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
    ) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return _make_divisible(c * width)

        stem = ch(_EFFNET_STEM)
        layers: list[nn.Module] = [
            Conv2dNormActivation(in_channels, stem, 3, 2, norm_layer=_EFFNET_BN,
                                 activation_layer=nn.SiLU)
        ]
        total = sum(stage[6] for stage in _EFFNETV2_B0_STAGES)
        index = 0
        for fused, expand, kernel, stride, cin, cout, repeats, se_ratio in _EFFNETV2_B0_STAGES:
            cin, cout = ch(cin), ch(cout)
            blocks: list[nn.Module] = []
            for j in range(repeats):
                block_in, block_stride = (cin, stride) if j == 0 else (cout, 1)
                drop = stochastic_depth * index / total
                if fused:
                    blocks.append(_FusedMBConv(block_in, cout, expand, kernel, block_stride, drop))
                else:
                    blocks.append(
                        _MBConv(block_in, cout, expand, kernel, block_stride, se_ratio, drop)
                    )
                index += 1
            layers.append(nn.Sequential(*blocks))
        head = ch(_EFFNET_HEAD)
        layers.append(Conv2dNormActivation(ch(_EFFNETV2_B0_STAGES[-1][5]), head, 1,
                                           norm_layer=_EFFNET_BN, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # Keras reference: VarianceScaling(2.0, fan_out, truncated normal) for convs, where the
        # fan-out of a depthwise kernel is k*k; VarianceScaling(1/3, fan_out, uniform) for Dense.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                std = math.sqrt(2.0 / fan_out) / 0.87962566103423978
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                limit = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -limit, limit)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------------
# VGG16 / VGG19 (CIFAR variant with BatchNorm)
# --------------------------------------------------------------------------------------------

_VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _scaled(channels: int, width: float) -> int:
    return max(4, round(channels * width))


class _MaxPoolUnlessTiny(nn.Module):
    """2x2 max-pool that passes the input through once a spatial side is already 1 pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            return x
        return self.pool(x)


def _init_vgg(model: nn.Module) -> None:
    """VGG's initialisation: Kaiming-normal convolutions (fan out), zero biases, BatchNorm
    at identity; the linear layers keep torch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VGG(nn.Module):
    """VGG16/VGG19 with BatchNorm, CIFAR head (global average pool + one Linear layer)."""

    def __init__(
        self, config: str, num_classes: int, in_channels: int = 3, width: float = 1.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG_CONFIGS[config]:
            if item == "M":
                layers.append(_MaxPoolUnlessTiny())
            else:
                out = _scaled(int(item), width)
                layers += [
                    nn.Conv2d(channels, out, kernel_size=3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        _init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class LayeredVGG16(nn.Module):
    """VGG-16 whose every layer is set by the trial (Iranfar et al., Table III): 13 convolutions
    (filters, kernel, stride; "same" padding k//2, BatchNorm, ReLU), 5 max-pools (size =
    stride; skipped where the map is smaller than the pool), then flatten, one hidden dense
    layer (units, ReLU, dropout 0.5) and the classifier. Unset layers keep the original
    VGG-16's values (`service.core.space.LAYER_HPARAMS` defaults), so with no choices this is the
    CIFAR VGG-16 with its 512-unit dense head. `width` scales filters and units (at least 4),
    for CPU-sized variants of the same space."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 layers: Mapping[str, int] | None = None, image_size: int = 32) -> None:
        from service.core.space import LAYER_HPARAMS, VGG16_LAYERS, layer_kind

        super().__init__()
        chosen = dict(layers or {})
        unknown = sorted(set(chosen) - set(LAYER_HPARAMS))
        if unknown:
            raise BackboneError(f"vgg16_layers: unknown layer hyperparameter {unknown[0]!r}")

        def value(name: str) -> int:
            raw = chosen.get(name, LAYER_HPARAMS[name].default)
            spec = LAYER_HPARAMS[name]
            if isinstance(raw, bool) or not isinstance(raw, numbers.Integral) or not (
                    spec.low <= raw <= spec.high):
                raise BackboneError(f"vgg16_layers: {name} must be an integer in "
                                    f"[{spec.low:g}, {spec.high:g}], got {raw!r}")
            return int(raw)

        blocks: list[nn.Module] = []
        channels, side = in_channels, image_size
        self.choices: dict[str, int] = {}
        for layer in VGG16_LAYERS:
            kind = layer_kind(layer)
            if kind == "conv":
                filters = _scaled(value(f"{layer}_filters"), width)
                kernel, stride = value(f"{layer}_kernel"), value(f"{layer}_stride")
                blocks += [nn.Conv2d(channels, filters, kernel, stride=stride,
                                     padding=kernel // 2),
                           nn.BatchNorm2d(filters), nn.ReLU(inplace=True)]
                side = (side + 2 * (kernel // 2) - kernel) // stride + 1
                channels = filters
                self.choices.update({f"{layer}_filters": filters, f"{layer}_kernel": kernel,
                                     f"{layer}_stride": stride})
            elif kind == "pool":
                size = value(f"{layer}_size")
                if side >= size > 1:
                    blocks.append(nn.MaxPool2d(size, stride=size))
                    side //= size
                self.choices[f"{layer}_size"] = size
        units = _scaled(value("dense_units"), width)
        self.choices["dense_units"] = units
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, units), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(units, num_classes))
        _init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------
# ResNet-18 (CIFAR stem and ImageNet stem)
# --------------------------------------------------------------------------------------------


class _ResNet18(nn.Module):
    """ResNet-18 with torchvision's ``BasicBlock`` stages; subclasses only choose the stem.

    ``imagenet_stem`` False: 3x3 stride-1 conv, no max-pool (CIFAR).  True: 7x7 stride-2 conv and
    a 3x3 stride-2 max-pool (torchvision/ImageNet).  Module names follow torchvision (``conv1``,
    ``bn1``, ``layer1``..``layer4``, ``fc``); the max-pool has no parameters, so both stems give
    the same state-dict keys.
    """

    def __init__(
        self, num_classes: int, in_channels: int, width: float, *, imagenet_stem: bool
    ) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        )
        inplanes = widths[0]
        stages: list[nn.Module] = []
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(2):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or inplanes != planes:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes, 1, stride=s, bias=False),
                        nn.BatchNorm2d(planes),
                    )
                blocks.append(BasicBlock(inplanes, planes, s, downsample))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


class CifarResNet18(_ResNet18):
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool) and torchvision blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__(num_classes, in_channels, width, imagenet_stem=False)


class ImageNetResNet18(_ResNet18):
    """ResNet-18 with the ImageNet stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool).

    Source: Pham 2024, section 3.1 ("Initial Stem"); torchvision's ``resnet18`` structure and
    parameter count at width 1.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__(num_classes, in_channels, width, imagenet_stem=True)


# --------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[int, int, float], nn.Module]] = {
    "efficientnetv2_b0": lambda k, c, w: EfficientNetV2B0(k, c, w),
    "vgg16": lambda k, c, w: VGG("vgg16", k, c, w),
    "vgg19": lambda k, c, w: VGG("vgg19", k, c, w),
    "resnet18": lambda k, c, w: CifarResNet18(k, c, w),
    "resnet18_imagenet": lambda k, c, w: ImageNetResNet18(k, c, w),
}


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise BackboneError(f"{field}: expected a positive integer, got {value!r}")
    return int(value)


def build_backbone(
    spec: BackboneSpec | str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
    layers: Mapping[str, int] | None = None,
) -> nn.Module:
    """Build a freshly initialised backbone for ``in_channels`` x image_size^2 inputs.

    ``image_size`` is only validated for the fixed backbones: every one ends in adaptive
    pooling and VGG skips pools on 1-pixel maps, so any input size >= 1 works with the
    reference strides. ``vgg16_layers`` sizes its dense layer from it and takes ``layers``
    (per-layer hyperparameters, Iranfar et al.); the others refuse them.
    """
    if not isinstance(spec, BackboneSpec):
        spec = BackboneSpec.parse(spec)
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", in_channels)
    image_size = _positive_int("image_size", image_size)
    if spec.name in LAYERED:
        return LayeredVGG16(num_classes, in_channels, spec.width, layers, image_size)
    if layers:
        raise BackboneError(f"backbone {spec.name}: per-layer hyperparameters "
                            f"({next(iter(layers))}) need backbone vgg16_layers")
    if is_user_backbone(spec.name):
        return _user_backbone(spec, num_classes, in_channels, image_size)
    return _BUILDERS[spec.name](num_classes, in_channels, spec.width)


class _GreyToRGB(nn.Module):
    """Repeats a 1-channel input to the 3 channels a torchvision model expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def _user_backbone(spec: BackboneSpec, num_classes: int, in_channels: int,
                   image_size: int) -> nn.Module:
    """A backbone from an import path: `torchvision:<name>` through torchvision's model
    registry (fresh weights, `num_classes` outputs; a grey input is repeated to 3 channels),
    else `module:callable`, called with num_classes, in_channels, image_size and width."""
    module_name, _, attr = spec.name.partition(":")
    if module_name == TORCHVISION:
        import torchvision

        if attr not in torchvision.models.list_models(module=torchvision.models):
            hint = did_you_mean(attr, torchvision.models.list_models(
                module=torchvision.models), cutoff=0.6)
            raise BackboneError(f"backbone {spec.name}: torchvision has no classification "
                                f"model {attr!r}{hint}")
        if spec.width != 1.0:
            raise BackboneError(f"backbone {spec}: torchvision models have no width "
                                f"multiplier; drop '@{_format_width(spec.width)}'")
        model = torchvision.models.get_model(attr, weights=None, num_classes=num_classes)
        return _GreyToRGB(model) if in_channels == 1 else model
    try:
        build = import_path(spec.name)
    except ImportError as err:
        raise BackboneError(f"backbone {spec.name}: cannot import {module_name!r} ({err}); "
                            f"put it on PYTHONPATH (a Ray job: its working_dir)") from None
    except AttributeError:
        build = None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's module fails on import
        raise BackboneError(f"backbone {spec.name}: importing {module_name!r} fails: "
                            f"{_first_line(err)}") from None
    if not callable(build):
        raise BackboneError(f"backbone {spec.name}: {module_name} has no callable {attr!r}")
    try:
        model = build(num_classes=num_classes, in_channels=in_channels,
                      image_size=image_size, width=spec.width)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code: one line
        raise BackboneError(f"backbone {spec.name}: calling it with num_classes, "
                            f"in_channels, image_size, width failed: {_first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise BackboneError(f"backbone {spec.name}: returned {type(model).__name__}, not a "
                            f"torch.nn.Module")
    return model


def check_backbone(spec: BackboneSpec | str, *, num_classes: int = 10, in_channels: int = 3,
                   image_size: int = 32) -> None:
    """Build `spec` and run a batch of two through it (no gradients): the output must be
    (2, num_classes). For a user backbone when the config is read, so a bad one fails
    before Ray starts."""
    model = build_backbone(spec, num_classes=num_classes, in_channels=in_channels,
                           image_size=image_size)
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, image_size, image_size))
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's model: one line
        raise BackboneError(f"backbone {spec}: a {in_channels}x{image_size}x{image_size} "
                            f"batch fails in forward: {_first_line(err)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BackboneError(f"backbone {spec}: output is {shape} for a batch of 2, expected "
                            f"(2, {num_classes}) class scores")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Memory taken by parameters plus buffers, in MiB (bytes / 2**20)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch wraps a weights_only refusal in generic advice; the blocked global is further down.
    boilerplate = ("Weights only load failed", "Check the documentation of torch.load")
    useful = [line for line in lines if not line.startswith(boilerplate)]
    detail = (useful or lines or [""])[0]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    # Checkpoints saved from DataParallel/DDP or torch.compile wrappers prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state) and not any(
            k.startswith(prefix) for k in model_keys
        ):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_state_dict_file(
    model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True
) -> None:
    """Load weights saved with ``torch.save`` into ``model``, never unpickling arbitrary code.

    Accepts a raw state dict or ``{"state_dict": ...}`` / ``{"model": ...}``; problems raise
    BackboneError with a one-line message.
    """
    file = Path(path)
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise BackboneError(f"checkpoint: {str(file)!r} {what}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BackboneError(
            f"checkpoint: refused {str(file)!r}: it is not a plain tensor file "
            f"(loaded with weights_only=True): {_first_line(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt/truncated files raise many types
        raise BackboneError(
            f"checkpoint: cannot read {str(file)!r}: {_first_line(exc)}"
        ) from None

    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise BackboneError(
            f"checkpoint: {str(file)!r} holds a {type(obj).__name__}, expected a state dict "
            "or {'state_dict': ...} / {'model': ...}"
        )
    bad = next((k for k, v in obj.items()
                if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise BackboneError(
            f"checkpoint: entry {bad!r} in {str(file)!r} is not a named tensor"
        )

    expected = model.state_dict()
    state = _strip_prefix(dict(obj), set(expected))
    for key, tensor in expected.items():
        if key in state and state[key].shape != tensor.shape:
            raise BackboneError(
                f"checkpoint: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"model expects {tuple(tensor.shape)}"
            )
    if strict:
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
            raise BackboneError(
                f"checkpoint: {str(file)!r} does not match the model: {'; '.join(parts)}"
            )
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise BackboneError(f"checkpoint: cannot load {str(file)!r}: {_first_line(exc)}") from None
