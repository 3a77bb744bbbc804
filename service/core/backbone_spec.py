"""Backbone names as configs write them (``name`` or ``name@width``), checked without
torch: the CLI validates a config before Ray starts and needs nothing else of torch, whose
import costs about 2.5 s of CPU (issue: time goes into training). `service.training.backbones`
builds the models and re-exports all of this."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from service.core.api import did_you_mean

BACKBONES: tuple[str, ...] = (
    "efficientnetv2_b0", "vgg16", "vgg19", "resnet18", "resnet18_imagenet", "vgg16_layers"
)
LAYERED: tuple[str, ...] = ("vgg16_layers",)
"""Backbones whose every layer's hyperparameters come from the trial config (Iranfar et al.)."""

MAX_WIDTH = 4.0


class BackboneError(ValueError):
    """Invalid backbone name, width, build argument or checkpoint; the message is one line."""


def _format_width(width: float) -> str:
    text = repr(float(width))
    return text.removesuffix(".0")


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}")
TORCHVISION = "torchvision"
"""`torchvision:<name>`: a torchvision classification model by its registry name."""


def is_user_backbone(name: str) -> bool:
    """Whether a backbone name is an import path (`pkg.module:build`, `torchvision:name`)."""
    return ":" in name


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise BackboneError(f"backbone: expected a string name, got {type(name).__name__}")
    if is_user_backbone(name):
        text = name.strip()
        if not _IMPORT_PATH.fullmatch(text):
            raise BackboneError(f"backbone: {name!r} is not an import path like "
                                f"'mypkg.models:build' or 'torchvision:resnet50'")
        if "_w" in text or "__" in text:  # the cell folder codec (service.core.layout) uses them
            raise BackboneError(f"backbone: {name!r} holds '_w' or '__', which result folder "
                                f"names reserve; re-export the builder under another name")
        return text
    key = name.strip().lower().replace("-", "_")
    if key in BACKBONES:
        return key
    accepted = ", ".join(BACKBONES)
    hint = did_you_mean(key, BACKBONES, cutoff=0.6)
    raise BackboneError(f"backbone: unknown name {name!r}, accepted: {accepted}, or an import "
                        f"path (mypkg.models:build, torchvision:resnet50){hint}")


def _check_width(width: object) -> float:
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise BackboneError(
            f"backbone width: expected a number in (0, {MAX_WIDTH:g}], got {width!r}"
        )
    value = float(width)
    if not math.isfinite(value) or not 0.0 < value <= MAX_WIDTH:
        raise BackboneError(
            f"backbone width: must be in (0, {MAX_WIDTH:g}], got {_format_width(value)}"
        )
    return value


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone name plus width multiplier, written ``name`` or ``name@width`` in configs."""

    name: str
    width: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _check_name(self.name))
        object.__setattr__(self, "width", _check_width(self.width))

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        """Parse ``"vgg16"`` or ``"vgg16@0.125"`` (width in (0, 4]); raise BackboneError."""
        if not isinstance(text, str):
            raise BackboneError(
                f"backbone: expected text like 'vgg16' or 'vgg16@0.5', got {type(text).__name__}"
            )
        name, sep, width_text = text.strip().partition("@")
        if not sep:
            return cls(name)
        width_text = width_text.strip()
        try:
            width = float(width_text)
        except ValueError:
            raise BackboneError(
                f"backbone width: expected a number in (0, {MAX_WIDTH:g}] after '@', "
                f"got {width_text!r} in {text!r}"
            ) from None
        return cls(name, width)

    def __str__(self) -> str:
        if self.width == 1.0:
            return self.name
        return f"{self.name}@{_format_width(self.width)}"
