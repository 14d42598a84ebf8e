"""Training-time augmentation on a batch of network inputs, seeded by a torch ``Generator``.

Kept to what the aligned crop can meet at serving time: mirror images (the Embedder averages
a face with its mirror), lighting (colour jitter), small alignment errors (shifts of a few
pixels: the detector's landmarks are not exact) and soft focus (blur). No rotations or large
crops: alignment already removed them, and the network should rely on that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

MAX_SHIFT = 4  # pixels of 112
BLUR_PROBABILITY = 0.2


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly flipped, colour-jittered, shifted and blurred copies of ``batch`` (B, 3, H, W),
    values in the network's normalised range."""
    size = batch.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(size, *shape, generator=generator)

    flip = torch.rand(size, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    # Brightness, contrast and per-channel gain, about the crop's own mean.
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(0.7, 1.3, 1, 1, 1)
    gain = uniform(0.9, 1.1, 3, 1, 1)
    brightness = uniform(-0.2, 0.2, 1, 1, 1)
    out = ((out - mean) * contrast + mean) * gain + brightness
    out = _shift(out, generator)
    blurred = torch.rand(size, generator=generator) < BLUR_PROBABILITY
    if blurred.any():
        out[blurred] = _blur(out[blurred])
    return out.clamp(-1.0, 1.0)


def _shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``MAX_SHIFT`` pixels each way, edges replicated."""
    height, width = batch.shape[2:]
    padded = F.pad(batch, (MAX_SHIFT,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (batch.shape[0], 2), generator=generator)
    return torch.stack(
        [
            image[:, dy : dy + height, dx : dx + width]
            for image, (dy, dx) in zip(padded, offsets.tolist(), strict=True)
        ]
    )


def _blur(batch: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial (Gaussian-like) blur per channel."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16.0
    weight = kernel.expand(batch.shape[1], 1, 3, 3).contiguous()
    return F.conv2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"), weight, groups=batch.shape[1])
