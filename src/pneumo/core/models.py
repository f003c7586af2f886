"""Models by name, and self-describing checkpoints.

Every encoder is segmentation-models-pytorch's ResNet34 encoder with the U-Net's
`in_channels`, so any pretraining (CXR-14 labels, pseudo-labels, the resnet34
autoencoder) yields a state dict that loads straight into `smp.Unet(...).encoder`.
Weights are never downloaded (`weights=None`). Checkpoints are safetensors files whose
metadata holds the architecture arguments and the params that made them.
"""

from __future__ import annotations

import json
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ENCODER = "resnet34"
METADATA_KEY = "pneumo"  # safetensors metadata key holding the checkpoint's JSON description


def build_encoder(in_channels: int = 1) -> nn.Module:
    """The U-Net's ResNet34 encoder, randomly initialised (smp's init, seeded by the caller)."""
    return smp.encoders.get_encoder(ENCODER, in_channels=in_channels, depth=5, weights=None)


def build_unet(in_channels: int = 1) -> smp.Unet:
    """U-Net with a ResNet34 encoder and one output (pneumothorax logit per pixel)."""
    return smp.Unet(ENCODER, encoder_weights=None, in_channels=in_channels, classes=1)


class Classifier(nn.Module):
    """ResNet34 encoder + global average pooling + linear head, for encoder pretraining."""

    def __init__(self, n_outputs: int, in_channels: int = 1):
        super().__init__()
        self.encoder = build_encoder(in_channels)
        self.head = nn.Linear(self.encoder.out_channels[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1].mean(dim=(2, 3)))


def _decoder(latent: int, chans: list[int], out_channels: int) -> nn.Sequential:
    """Upsample x2 per level from the bottleneck, widest level first, to the input size."""
    blocks, c_prev = [], latent
    for c in reversed(chans):
        blocks += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_prev, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        c_prev = c
    return nn.Sequential(*blocks, nn.Conv2d(c_prev, out_channels, 3, padding=1))


def pooled_features(maps: list[torch.Tensor], grid: int) -> torch.Tensor:
    """Each feature map average-pooled to a grid x grid layout (its own size when smaller),
    flattened and concatenated, (B, features). Unlike one global average, this keeps where
    in the film a pattern sits and patterns a few pixels wide: a 1% finding is 1% of a
    global average, but most of one grid cell."""
    return torch.cat([F.adaptive_avg_pool2d(m, min(grid, m.shape[-1])).flatten(1) for m in maps], 1)


class ConvAutoencoder(nn.Module):
    """Plain convolutional autoencoder; `depth` and `width` set its complexity."""

    def __init__(self, in_channels: int = 1, depth: int = 4, width: int = 32, latent: int = 128):
        super().__init__()
        chans = [width * 2**i for i in range(depth)]
        layers, c_prev = [], in_channels
        for c in chans:
            layers += [
                nn.Conv2d(c_prev, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            c_prev = c
        self.encoder = nn.Sequential(*layers)
        self.to_latent = nn.Conv2d(c_prev, latent, 1)
        self.decoder = _decoder(latent, chans, in_channels)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, finest first (one per stride-2 block)."""
        maps = []
        for i in range(0, len(self.encoder), 3):  # conv, batch norm, relu
            x = self.encoder[i : i + 3](x)
            maps.append(x)
        return maps

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.stages(x)[-1])

    def encode(self, x: torch.Tensor, grid: int = 1) -> torch.Tensor:
        """Latent features per image for clustering, (B, features): the last three encoder
        stages and the bottleneck, each pooled to a grid x grid layout (grid 1 = global
        averages)."""
        maps = self.stages(x)[-3:]
        return pooled_features([*maps, self.to_latent(maps[-1])], grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck(x))


class ResNetAutoencoder(ConvAutoencoder):
    """The U-Net's ResNet34 encoder + a light upsampling decoder; `encoder` is
    interchangeable with `smp.Unet(...).encoder`."""

    def __init__(self, in_channels: int = 1, depth: int = 5, width: int = 16, latent: int = 128):
        nn.Module.__init__(self)
        self.encoder = build_encoder(in_channels)
        self.to_latent = nn.Conv2d(self.encoder.out_channels[-1], latent, 1)
        self.decoder = _decoder(latent, [width * 2**i for i in range(5)], in_channels)  # resnet34 halves 5 times

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)[1:]  # smp's first feature is the input itself


AUTOENCODERS: dict[str, type[ConvAutoencoder]] = {"conv": ConvAutoencoder, "resnet34": ResNetAutoencoder}


def by_name(registry: dict, name: str, what: str):
    """Look a name up in a registry; the error lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; valid: {sorted(registry)}") from None


def build_autoencoder(arch: str, **kwargs) -> ConvAutoencoder:
    return by_name(AUTOENCODERS, arch, "autoencoder arch")(**kwargs)


def save_checkpoint(path: Path, model_or_state: nn.Module | dict, **meta) -> None:
    """Weights as safetensors; `meta` (architecture args, params, ...) as JSON metadata.

    The metadata is one sorted JSON string under a single key: safetensors writes its
    metadata map in no fixed order, and the same weights must give the same bytes (DVC
    compares outputs by hash)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) from a safetensors checkpoint, or from a plain state-dict
    `.pt`/`.pth` loaded with weights_only=True (a pickled object is refused)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
        return load_file(str(path)), meta
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a plain state dict loadable with weights_only=True ({e})") from None
    return state, {}


def load_encoder_into(encoder: nn.Module, path: str | Path) -> dict:
    """Initialise `encoder` from an encoder checkpoint (every key must match); its metadata."""
    state, meta = load_checkpoint(path)
    if meta.get("encoder", ENCODER) != ENCODER:
        raise ValueError(
            f"{path}: holds a {meta.get('encoder')!r} encoder, cannot initialise a {ENCODER} U-Net encoder"
        )
    expected = set(encoder.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: encoder keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    encoder.load_state_dict(state)
    return meta
