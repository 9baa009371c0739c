"""Batched augmentation on the device: pad-4 random crop and horizontal flip (the paper's).

Random draws come from a CPU torch.Generator, once per epoch for the whole training set, so a
run is reproducible on any device and resumes exactly from a checkpoint.
"""

from __future__ import annotations

import torch

PAD = 4


def draw_epoch_params(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (n, 2) in [0, 2*PAD] and flip flags (n,) for one epoch, from ``generator``."""
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    return offsets, flips


def crop_and_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W); offsets (B, 2) long; flips (B,) bool -> augmented (B, C, H, W).

    Zero-pads by PAD, takes the HxW window at each sample's offset, mirrors where flips is set.
    One gather for the whole batch, no Python loop over samples.
    """
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    # contiguous() with no format: preserve_format is not accepted here (it raised for C > 1)
    return out.permute(0, 3, 1, 2).contiguous()
