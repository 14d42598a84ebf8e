"""The backbone trained here: an IResNet (ArcFace's ResNet variant) sized for a CPU.

IResNet ("improved" residual units, Deng et al., ArcFace, CVPR 2019): BN before each
convolution, PReLU, and an output head of BN -> dropout -> FC -> BN instead of global pooling,
which keeps the spatial layout of an aligned face (eyes always at the same place) in the
embedding. Here at a quarter of the usual width (16 channels in the first stage, ``width``)
with a stride-2 stem: on two CPU cores that trains ~5x faster than the full IResNet-18 at 112 px
and still learns (MobileFaceNet's depthwise convolutions were slower still to train here; the
issue's measurements). Channels-last memory format roughly doubles CPU convolution speed.

Input: (B, 3, 112, 112) RGB, ``(x - 127.5) / 127.5`` (``preprocess``): the ``arcface`` family of
``vision/embed.py``, so an exported model plugs into the Embedder by configuration.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MEAN = 127.5
STD = 127.5


def preprocess(crops: np.ndarray) -> torch.Tensor:
    """(B, 112, 112, 3) BGR uint8 crops -> the network's (B, 3, 112, 112) float input."""
    rgb = torch.from_numpy(np.ascontiguousarray(crops[:, :, :, ::-1])).permute(0, 3, 1, 2)
    return (rgb.float() - MEAN) / STD


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) input."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(inplanes),
            nn.Conv2d(inplanes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.PReLU(planes),
            nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x) + self.shortcut(x)
        return out


class IResNet(nn.Module):
    """IResNet with ``layers`` blocks per stage ([2, 2, 2, 2]: IResNet-18), ``width`` channels
    in the first stage (doubling per stage) and a ``embedding_dim`` output (not normalised:
    the losses and the Embedder normalise)."""

    def __init__(
        self, embedding_dim: int = 128, width: int = 16, layers: tuple[int, ...] = (2, 2, 2, 2)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.PReLU(width),
        )
        blocks: list[nn.Module] = []
        inplanes = width
        for stage, count in enumerate(layers):
            planes = width * 2**stage
            for index in range(count):
                blocks.append(IBasicBlock(inplanes, planes, 2 if index == 0 else 1))
                inplanes = planes
        self.stages = nn.Sequential(*blocks)
        side = 112 // 2 ** (len(layers) + 1) + 1  # 112 -> 56 (stem) -> 28 -> 14 -> 7 -> 4
        self.head = nn.Sequential(
            nn.BatchNorm2d(inplanes),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(inplanes * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        embedding: torch.Tensor = self.head(self.stages(self.stem(x)))
        return embedding
