"""A user's own model for the tests and the README example: `tests.user_models:small_cnn`,
built the way the service calls an import-path backbone."""

from __future__ import annotations

from torch import nn


def small_cnn(*, num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    """Two conv blocks and a linear head; `width` scales the channels."""
    channels = max(4, round(16 * width))
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, num_classes))


def wrong_output(*, num_classes: int, in_channels: int, image_size: int, width: float
                 ) -> nn.Module:
    """A model whose output is not one score per class."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))


not_a_builder = 3
