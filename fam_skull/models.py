"""The networks: MONAI UNet (default), MONAI AutoEncoder (SkullRec), and the FAM paper's linear-latent autoencoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import AutoEncoder, UNet
from torch import nn


class LinearLatentAutoEncoder(AutoEncoder):
    """MONAI AutoEncoder whose bottleneck is encoder -> Linear -> latent -> Linear -> decoder (the FAM paper's
    skull model). ``spatial_size`` is the training grid; each stride-s, kernel-3, padding-1 convolution
    maps n voxels to (n - 1) // s + 1. Its FAM layer is ``decode_latent``, the Linear from the latent back
    to the decoder (the paper's ``decodeL``).
    """

    fam_bottleneck = "decode_latent"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        spatial_size: Sequence[int],
        latent_size: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, channels, strides, **kwargs)
        grid = list(spatial_size)
        for s in strides:
            grid = [(n - 1) // s + 1 for n in grid]
        self.encoded_shape = (channels[-1], *grid)
        features = math.prod(self.encoded_shape)
        self.encode_latent = nn.Linear(features, latent_size)
        self.decode_latent = nn.Linear(latent_size, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate(self.encode(x))
        z = self.encode_latent(x.flatten(1))
        return self.decode(self.decode_latent(z).view(-1, *self.encoded_shape))


def implant_mask(logits: torch.Tensor, defective: torch.Tensor) -> torch.Tensor:
    """The implant a network predicts: its foreground (argmax of 2 classes) minus the bone it was given.

    The same for both ``model.target``s: an implant network's output is the implant, and a completion
    network's completed skull minus its input is the bone it added. Shapes (B, 2, ...) and (B, 1, ...).
    """
    return (logits.argmax(1, keepdim=True) == 1) & ~(defective > 0.5)


def build_model(
    name: str,
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    act: str = "prelu",
    dropout: float = 0.0,
    latent_size: int = 32,
    spatial_size: Sequence[int] = (256, 256, 128),
) -> nn.Module:
    """Build ``"unet"``, ``"autoencoder"`` or ``"linear_ae"`` for 3D volumes."""
    common = dict(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        act=act,
        dropout=dropout,
    )
    if name == "unet":
        if len(strides) != len(channels) - 1:
            raise ValueError(f"model.strides needs len(channels) - 1 = {len(channels) - 1} entries, got {len(strides)}")
        return UNet(**common)
    if len(strides) != len(channels):
        raise ValueError(f"model.strides needs one entry per channel ({len(channels)}), got {len(strides)}")
    if name == "autoencoder":
        return AutoEncoder(**common)
    if name == "linear_ae":
        return LinearLatentAutoEncoder(**common, spatial_size=spatial_size, latent_size=latent_size)
    raise ValueError(f"model.name must be 'unet', 'autoencoder' or 'linear_ae', got {name!r}")
