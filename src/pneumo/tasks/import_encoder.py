"""`import_encoder`: the `imagenet` initialisation, torchvision's ResNet34 ImageNet weights
read from a local file the user downloaded, converted to the U-Net's one-channel encoder
exactly as segmentation-models-pytorch converts pretrained weights for `in_channels=1`, and
written like every other initialisation's encoder. Nothing is downloaded: without the file
the stage stops with an error that says where to get it."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file

from pneumo.core import models

log = logging.getLogger(__name__)

URL = "https://download.pytorch.org/models/resnet34-b627a593.pth"  # torchvision's IMAGENET1K_V1
EXPECTED = f"expected torchvision's ResNet34 ImageNet state dict (e.g. {URL.rsplit('/', 1)[1]} from {URL})"
HEAD = ("fc.weight", "fc.bias")  # the ImageNet classifier: the U-Net has no use for it
# BatchNorm buffers added in torch 0.4.1; state dicts saved before lack them and torch fills them
# in (with 0) on load, so their absence is no sign of a different network
OPTIONAL_SUFFIX = ".num_batches_tracked"


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's resnet34 state dict (fc included), built on the meta
    device: no weights are initialised, none downloaded."""
    with torch.device("meta"):
        model = torchvision.models.resnet34(weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    """One line of a loader's error: the class a pickle needs (torch's weights_only message is
    many lines), else the error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch's message carries terminal bold
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it pickles {found.group(1)}"
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file, or of a `.pth`/`.pt` plain state dict loaded with
    weights_only=True (a pickled model or other object is refused)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({_reason(e)}); {EXPECTED}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: not loadable with weights_only=True ({_reason(e)}); {EXPECTED}, "
            "a plain state dict, not a pickled model"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__} that is not a state dict of tensors; {EXPECTED}")
    return dict(state)


def check_layout(path: Path, state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """Every key of torchvision's resnet34 (num_batches_tracked optional) and no other, each
    with its shape."""
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a torchvision resnet34 state dict: missing {missing[:5]} ({len(missing)} in all), "
            f"unexpected {unexpected[:5]} ({len(unexpected)} in all); {EXPECTED}"
        )
    wrong = [k for k in state if tuple(state[k].shape) != expected[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: not a torchvision resnet34 state dict: {k} has shape {tuple(state[k].shape)}, "
            f"expected {expected[k]} ({len(wrong)} key(s) differ in shape)"
        )


def to_one_channel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's state dict: the classifier dropped, and the first convolution's RGB kernels
    summed into one channel, as smp's `patch_first_conv` does for pretrained weights and
    `in_channels=1` (`weight.sum(1, keepdim=True)`): a grey image x fed as RGB (x, x, x) gives
    the same first-layer response."""
    out = {k: v for k, v in state.items() if k not in HEAD}
    out["conv1.weight"] = state["conv1.weight"].sum(1, keepdim=True)
    return out


def import_encoder(*, weights: Path | str, out_path: Path, initialisation: str = "imagenet") -> dict:
    """Convert the local torchvision ResNet34 ImageNet file `weights` into the U-Net's encoder
    at `out_path`; {"keys": keys written, "sha256": the file's hash}. Every error is one line
    naming the file."""
    path = Path(weights)
    if str(weights).strip() in ("", "."):
        raise FileNotFoundError(f"'' (empty path): no such file; {EXPECTED}, set import_encoder.weights")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; {EXPECTED}, set import_encoder.weights")
    expected = expected_shapes()
    state = read_state(path)
    check_layout(path, state, expected)
    for k in expected:
        if k.endswith(OPTIONAL_SUFFIX) and k not in state:
            state[k] = torch.tensor(0, dtype=torch.long)  # what torch gives a state dict without them
    encoder = models.build_encoder(1)
    encoder.load_state_dict(to_one_channel(state), strict=True)
    digest = sha256(path)
    models.save_checkpoint(
        out_path,
        encoder,
        kind="encoder",
        encoder=models.ENCODER,
        in_channels=1,
        source=initialisation,
        pretrained=True,  # train_unet trains the decoder alone first
        weights_file=path.name,
        weights_sha256=digest,
    )
    n = len(encoder.state_dict())
    log.info(f"{initialisation}: {path.name} (sha256 {digest[:12]}...) -> {out_path}, {n} tensors")
    return {"keys": n, "sha256": digest}
