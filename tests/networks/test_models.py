"""models.py: the networks a config names, their MONAI spec (what a bundle's network_def holds), implant_mask."""

import pytest
import torch
from monai.bundle import ConfigParser

from fam_skull.networks.implant import implant_mask
from fam_skull.networks.models import build_model, network_spec


@pytest.mark.parametrize(
    "name, channels, strides", [("unet", (4, 8, 16), (2, 2)), ("autoencoder", (4, 8), (2, 2)), ("linear_ae", (4, 8), (2, 2))]
)
def test_the_spec_builds_the_same_network_through_monai(name, channels, strides):
    kwargs = dict(channels=channels, strides=strides, num_res_units=1, spatial_size=(16, 16, 8), latent_size=4)
    torch.manual_seed(0)
    ours = build_model(name, **kwargs)
    torch.manual_seed(0)
    parsed = ConfigParser({"net": network_spec(name, **kwargs)}).get_parsed_content("net")  # MONAI instantiates _target_
    assert type(parsed) is type(ours)
    x = torch.rand(1, 1, 16, 16, 8)
    ours.eval(), parsed.eval()
    torch.testing.assert_close(parsed(x), ours(x))


def test_wrong_strides_and_names_are_refused():
    with pytest.raises(ValueError, match=r"model\.strides needs len\(channels\) - 1 = 2 entries, got 3"):
        build_model("unet", channels=(4, 8, 16), strides=(2, 2, 2))
    with pytest.raises(ValueError, match="model.name must be"):
        network_spec("vnet")


def test_implant_mask_is_the_added_foreground():
    logits = torch.zeros(1, 2, 4, 1, 1)
    logits[0, 1, :3] = 1.0  # foreground on voxels 0, 1, 2
    defective = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 4, 1, 1)  # voxel 0 is the given bone
    assert implant_mask(logits, defective).flatten().tolist() == [False, True, True, False]
