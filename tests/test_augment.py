"""Device-side pad-crop and flip: exact windows, any channel count (CIFAR is 3)."""

import pytest
import torch

from gce_core.augment import PAD, crop_and_flip, draw_epoch_params


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_and_flip_takes_the_padded_window(channels):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, channels, 32, 32, generator=g)
    offsets, flips = draw_epoch_params(5, g)
    out = crop_and_flip(x, offsets, flips)
    assert out.shape == x.shape and out.is_contiguous()
    padded = torch.nn.functional.pad(x, (PAD,) * 4)
    for i in range(5):
        r, c = offsets[i].tolist()
        window = padded[i, :, r : r + 32, c : c + 32]
        expected = window.flip(-1) if flips[i] else window
        assert torch.equal(out[i], expected)


def test_centre_offset_without_flip_is_identity():
    x = torch.rand(2, 3, 8, 8)
    out = crop_and_flip(x, torch.full((2, 2), PAD), torch.zeros(2, dtype=torch.bool))
    assert torch.equal(out, x)

