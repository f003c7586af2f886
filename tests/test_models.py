"""Model registries, encoder compatibility with smp's U-Net, and safe checkpoints."""

import cv2
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from pneumo.core import data, models, phantoms


@pytest.mark.parametrize("arch", ["conv", "resnet34"])
def test_autoencoders_build_and_reconstruct_shape(arch):
    model = models.build_autoencoder(arch, in_channels=1, depth=3, width=8, latent=16)
    x = torch.randn(2, 1, 64, 64)
    assert model(x).shape == x.shape
    maps = [*model.stages(x)[-3:], model.bottleneck(x)]
    assert model.encode(x).shape == (2, sum(m.shape[1] for m in maps))  # grid 1: global averages
    cells = sum(m.shape[1] * min(4, m.shape[-1]) ** 2 for m in maps)
    assert model.encode(x, grid=4).shape == (2, cells) and cells > 4 * sum(m.shape[1] for m in maps)


def test_grid_features_tell_where_a_pattern_is_and_global_averages_do_not():
    """A bright square in the top-left vs the same square in the bottom-right: identical
    global averages of a translation-equivariant map, different grid cells."""
    left, right = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    left[..., 1:5, 1:5], right[..., 11:15, 11:15] = 1.0, 1.0
    assert torch.equal(models.pooled_features([left], 1), models.pooled_features([right], 1))
    assert not torch.equal(models.pooled_features([left], 4), models.pooled_features([right], 4))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown autoencoder arch 'vae'; valid: \['conv', 'resnet34'\]"):
        models.build_autoencoder("vae")


def test_resnet34_autoencoder_encoder_loads_into_smp_unet(tmp_path):
    """The autoencoder's encoder, saved and loaded (keys checked both ways, then a strict
    load), becomes the U-Net's encoder: every tensor, batch norm statistics included, and
    the features it computes; the U-Net still runs on it."""
    torch.manual_seed(0)
    ae = models.build_autoencoder("resnet34", in_channels=1, latent=8)
    path = tmp_path / "enc.safetensors"
    models.save_checkpoint(path, ae.encoder, kind="encoder", encoder="resnet34", in_channels=1)
    unet = smp.Unet("resnet34", encoder_weights=None, in_channels=1)
    saved = ae.encoder.state_dict()
    assert not torch.equal(unet.encoder.conv1.weight, saved["conv1.weight"])  # two random initialisations
    models.load_encoder_into(unet.encoder, path)
    loaded = unet.encoder.state_dict()
    assert loaded.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    x = torch.randn(2, 1, 32, 32)
    ae.eval(), unet.eval()
    with torch.no_grad():
        for ours, theirs in zip(unet.encoder(x), ae.encoder(x), strict=True):
            torch.testing.assert_close(ours, theirs)
        out = unet(x)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


def test_conv_autoencoder_encoder_is_refused_by_the_unet(tmp_path):
    ae = models.build_autoencoder("conv", depth=2, width=4, latent=4)
    path = tmp_path / "enc.safetensors"
    models.save_checkpoint(path, ae.encoder, kind="encoder", encoder="autoencoder-conv")
    with pytest.raises(ValueError, match="autoencoder-conv"):
        models.load_encoder_into(models.build_unet(1).encoder, path)


def test_checkpoint_metadata_round_trip(tmp_path):
    model = models.Classifier(3)
    path = tmp_path / "c.safetensors"
    models.save_checkpoint(path, model, kind="classifier", params={"lr": 0.001, "classes": ["a", "b"]})
    state, meta = models.load_checkpoint(path)
    assert meta == {"kind": "classifier", "params": {"lr": 0.001, "classes": ["a", "b"]}}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    again = tmp_path / "again.safetensors"  # same weights and metadata -> same bytes, whatever the key order
    models.save_checkpoint(again, model, params={"classes": ["a", "b"], "lr": 0.001}, kind="classifier")
    assert again.read_bytes() == path.read_bytes()


class Payload:
    """Stands for arbitrary code hidden in a pickled checkpoint."""


def test_pickled_object_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        models.load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    assert torch.equal(models.load_checkpoint(plain)[0]["w"], torch.ones(2))


def test_autoencoder_loss_falls_on_a_small_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    batch = np.stack(
        [cv2.resize(phantoms.phantom(rng, 128, set(), [])[0], (32, 32), interpolation=cv2.INTER_AREA) for _ in range(8)]
    )
    model = models.build_autoencoder("conv", depth=2, width=8, latent=8)
    x = data.to_input(torch.from_numpy(batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_hide_cells_masks_whole_cells_reproducibly():
    from pneumo.tasks.train_autoencoder import hide_cells

    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(hide_cells(x, 0.0, torch.Generator().manual_seed(0)), x)
    a = hide_cells(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, hide_cells(x, 0.5, torch.Generator().manual_seed(0)))
    hidden = (a == 0).reshape(4, 8, 4, 8, 4).all(dim=(2, 4))  # 8x8 cells of 4x4 pixels, each all or nothing
    kept = (a == x).reshape(4, 8, 4, 8, 4).all(dim=(2, 4))
    assert (hidden | kept).all() and 0.3 < hidden.float().mean() < 0.7
