"""The `imagenet` initialisation: a torchvision ResNet34 state dict file becomes the U-Net's
one-channel encoder (RGB kernels summed, as smp does), a U-Net trains from it as from a
pretrained encoder, and a missing or wrong file stops the stage with one line naming it."""

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from pneumo.core import models, runtime
from pneumo.tasks import train_unet

ROOT = Path(__file__).resolve().parents[1]


def _stage():
    spec = importlib.util.spec_from_file_location("import_encoder_stage", ROOT / "stages" / "import_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage = _stage()


def run_stage(weights, out: Path) -> None:
    stage.main(["--initialisation", "imagenet", "--weights", str(weights), "--out", str(out)])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    """A seeded random resnet34 saved in torchvision's layout, as its published file is."""
    torch.manual_seed(0)
    state = torchvision.models.resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(state, path)
    return state, path


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "imagenet-0.safetensors"
    run_stage(source[1], out)
    return out


def test_the_encoder_holds_the_file_with_its_rgb_kernels_summed(source, imported):
    state, path = source
    encoder = models.build_encoder(1)
    meta = models.load_encoder_into(encoder, imported)
    got = encoder.state_dict()
    assert got["conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.equal(got["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for key in ("layer4.2.conv2.weight", "layer1.0.bn1.running_var", "bn1.bias"):
        assert torch.equal(got[key], state[key])
    assert "fc.weight" not in got
    assert meta["source"] == "imagenet" and meta["pretrained"] is True and meta["in_channels"] == 1
    assert meta["weights_file"] == "resnet34.pth"
    assert meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_safetensors_file_without_batchnorm_counters_gives_the_same_encoder(source, imported, tmp_path):
    """A state dict saved before torch 0.4.1 lacks `num_batches_tracked`; torch loads it, so do we."""
    state, _ = source
    path = tmp_path / "resnet34.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}, str(path))
    run_stage(path, tmp_path / "out.safetensors")
    a, b = models.load_checkpoint(imported)[0], models.load_checkpoint(tmp_path / "out.safetensors")[0]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("num_batches_tracked"))


def test_a_unet_trains_from_the_imported_encoder_as_pretrained(tiny_siim, unet_run, imported):
    """With one epoch and `freeze_encoder_epochs=1` the kept epoch is the frozen one: the U-Net's
    encoder parameters are the imported ones, unchanged, only if train_unet read the file as
    pretrained (a `none` encoder trains from the first step)."""
    args = unet_run(tiny_siim, "imagenet", encoder_path=imported, variant="imagenet", freeze_encoder_epochs=1)
    train_unet.train_unet(**args, rt=runtime.start("cpu"))
    assert args["out_path"].is_file()
    unet, meta = models.load_checkpoint(args["out_path"])
    assert meta["variant"] == "imagenet" and meta["best_epoch"] == 0
    encoder = models.build_encoder(1)
    models.load_encoder_into(encoder, imported)
    for name, param in encoder.named_parameters():
        assert torch.equal(unet[f"encoder.{name}"], param), name


@pytest.mark.parametrize("weights", ["does/not/exist/resnet34-b627a593.pth", ""])
def test_a_missing_file_is_one_line_naming_it_and_where_to_get_it(weights, tmp_path):
    out = tmp_path / "out.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        run_stage(weights, out)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{weights}:" if weights else "'' (empty path):")
    assert "torchvision" in message and "https://download.pytorch.org/models/resnet34-b627a593.pth" in message
    assert "import_encoder.weights" in message
    assert not out.exists()


def _resnet18(path: Path) -> None:
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)


def _one_channel_conv1(path: Path) -> None:
    state = torchvision.models.resnet34(weights=None).state_dict()
    state["conv1.weight"] = state["conv1.weight"].sum(1, keepdim=True)
    torch.save(state, path)


def _pickled_model(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path)


def _not_a_pickle(path: Path) -> None:
    path.write_text("<html>404 Not Found</html>")


def _unet_checkpoint(path: Path) -> None:
    models.save_checkpoint(path, models.build_unet(1), kind="unet")


@pytest.mark.parametrize(
    "write, name, says",
    [
        (_resnet18, "resnet18.pth", "not a torchvision resnet34 state dict: missing ['layer1.2.conv1.weight'"),
        (_one_channel_conv1, "resnet34.pth", "conv1.weight has shape (64, 1, 7, 7), expected (64, 3, 7, 7)"),
        (_pickled_model, "model.pt", "not loadable with weights_only=True (it pickles torch.nn.modules.linear.Linear)"),
        (_not_a_pickle, "resnet34-b627a593.pth", "not loadable with weights_only=True ("),
        (_unet_checkpoint, "model.safetensors", "unexpected ['decoder."),
    ],
)
def test_a_wrong_file_is_one_line_naming_it(write, name, says, tmp_path):
    path, out = tmp_path / name, tmp_path / "out.safetensors"
    write(path)
    with pytest.raises(ValueError) as e:
        run_stage(path, out)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert says in message
    assert not out.exists()
