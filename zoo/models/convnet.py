"""The MNIST ConvNet, attribute names as pytorch/examples ``mnist/main.py``'s ``Net`` (``conv1``,
``conv2``, ``dropout1``, ``dropout2``, ``fc1``, ``fc2``), so that ``Net``'s ``state_dict()``
loads as it is. ReLU, max-pool and log-softmax are functions, as there: no parameters, no
modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.convnet import ConvNetConfig
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["ConvNet"]


@register_model("convnet", "torch")
class ConvNet(nn.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> max-pool 2 -> dropout1 -> flatten (C, H, W) -> fc1 ->
    ReLU -> dropout2 -> fc2 -> log-softmax.

    Input: (B, in_chans, H, W) channels-first, H and W pooling to ``config.feature_size``.
    Output: log-probabilities (B, num_classes) (train with ``F.nll_loss``); with
    ``config.features`` the named layers' outputs (``zoo.features``), channels-first maps.
    """

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(config.in_chans, c1, 3, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1)
        self.dropout1 = nn.Dropout(config.dropout1_rate)
        self.dropout2 = nn.Dropout(config.dropout2_rate)
        self.fc1 = nn.Linear(config.flat_features, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_inputs(self, "torch", x)
        taps = FeatureTaps(self.config.features)
        x = self.conv1(x)
        if taps.take("conv1", x):
            return taps.outputs
        x = self.conv2(F.relu(x))
        if taps.take("conv2", x):
            return taps.outputs
        x = self.dropout1(F.max_pool2d(F.relu(x), 2))
        if taps.take("dropout1", x):
            return taps.outputs
        x = self.fc1(torch.flatten(x, 1))
        if taps.take("fc1", x):
            return taps.outputs
        x = self.fc2(self.dropout2(F.relu(x)))
        if taps.take("fc2", x):
            return taps.outputs
        return F.log_softmax(x, dim=1)
