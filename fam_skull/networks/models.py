"""The networks: MONAI UNet (default), MONAI AutoEncoder (SkullRec), and the FAM paper's linear-latent autoencoder,
built by name or from a run's config."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import AutoEncoder, UNet
from torch import nn

from fam_skull.config import Config, ConfigError, ModelConfig


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


NETWORKS = {
    "unet": "monai.networks.nets.UNet",
    "autoencoder": "monai.networks.nets.AutoEncoder",
    "linear_ae": "fam_skull.networks.models.LinearLatentAutoEncoder",
}


def network_spec(
    name: str,
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    spatial_size: Sequence[int] | None = None,
    **architecture: Any,
) -> dict:
    """A network as a MONAI config component: ``{"_target_": class path, **constructor arguments}`` (what
    :func:`build_model` builds and what an exported bundle's ``network_def`` holds).

    ``architecture``: channels, strides, num_res_units, norm, act, dropout, latent_size; each one not given takes
    :class:`~fam_skull.config.ModelConfig`'s default. ``spatial_size`` (the training grid) is needed by
    ``linear_ae``, whose Linear layers depend on it.
    """
    if name not in NETWORKS:
        raise ValueError(f"model.name must be 'unet', 'autoencoder' or 'linear_ae', got {name!r}")
    defaults = {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k not in ("name", "target")}
    unknown = set(architecture) - set(defaults)
    if unknown:
        raise ValueError(f"network_spec: unknown argument(s) {sorted(unknown)}; valid: {', '.join(defaults)}")
    a = defaults | architecture
    channels, strides = a["channels"], a["strides"]
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
        "num_res_units": a["num_res_units"],
        "norm": a["norm"],
        "act": a["act"],
        "dropout": a["dropout"],
    }
    if name == "linear_ae":
        if spatial_size is None:
            raise ValueError("linear_ae needs spatial_size (the training grid): its Linear layers depend on it")
        spec |= {"spatial_size": list(spatial_size), "latent_size": a["latent_size"]}
    return spec


def build_model(name: str, **kwargs) -> nn.Module:
    """Build ``"unet"``, ``"autoencoder"`` or ``"linear_ae"`` for 3D volumes (arguments of :func:`network_spec`)."""
    spec = network_spec(name, **kwargs)
    cls = {"unet": UNet, "autoencoder": AutoEncoder, "linear_ae": LinearLatentAutoEncoder}[name]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "_target_"})


def _arguments(config: Config, grid: Sequence[int]) -> dict:
    m = config.model
    return dict(
        in_channels=2 if config.stage == "refine" else 1,
        channels=m.channels,
        strides=m.strides,
        num_res_units=m.num_res_units,
        norm=m.norm,
        act=m.act,
        dropout=m.dropout,
        latent_size=m.latent_size,
        spatial_size=grid,
    )


def network_spec_from_config(config: Config, grid: Sequence[int]) -> dict:
    """The run's network as a MONAI config component (an exported bundle's network_def)."""
    try:
        return network_spec(config.model.name, **_arguments(config, grid))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def model_from_config(config: Config, grid: Sequence[int]) -> nn.Module:
    """The run's network; a refinement network takes 2 channels (defective skull, coarse implant probability)."""
    try:
        return build_model(config.model.name, **_arguments(config, grid))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
