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


NETWORKS = {
    "unet": "monai.networks.nets.UNet",
    "autoencoder": "monai.networks.nets.AutoEncoder",
    "linear_ae": "fam_skull.models.LinearLatentAutoEncoder",
}


def network_spec(
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
) -> dict:
    """A network as a MONAI config component: ``{"_target_": class path, **constructor arguments}`` (what
    :func:`build_model` builds and what an exported bundle's ``network_def`` holds)."""
    if name not in NETWORKS:
        raise ValueError(f"model.name must be 'unet', 'autoencoder' or 'linear_ae', got {name!r}")
    needed = len(channels) - 1 if name == "unet" else len(channels)
    if len(strides) != needed:
        what = "len(channels) - 1" if name == "unet" else "one entry per channel"
        raise ValueError(f"model.strides needs {what} = {needed} entries, got {len(strides)}")
    spec = {
        "_target_": NETWORKS[name],
        "spatial_dims": 3,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "channels": list(channels),
        "strides": list(strides),
        "num_res_units": num_res_units,
        "norm": norm,
        "act": act,
        "dropout": dropout,
    }
    if name == "linear_ae":
        spec |= {"spatial_size": list(spatial_size), "latent_size": latent_size}
    return spec


def build_model(name: str, **kwargs) -> nn.Module:
    """Build ``"unet"``, ``"autoencoder"`` or ``"linear_ae"`` for 3D volumes (arguments of :func:`network_spec`)."""
    spec = network_spec(name, **kwargs)
    cls = {"unet": UNet, "autoencoder": AutoEncoder, "linear_ae": LinearLatentAutoEncoder}[name]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "_target_"})
