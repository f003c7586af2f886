"""DVC stage `import_encoder@<initialisation>-<run>`: the encoder of the `imagenet`
initialisation of one run, torchvision's ResNet34 ImageNet weights from a local file (never
downloaded) converted to one input channel. The weights are the same for every run: the run
seeds only the U-Net trained from them, and the stage exists per run so every initialisation
has an encoder file `<name>-<run>`."""

import argparse
from pathlib import Path

from pneumo.progress import log_to_stderr
from pneumo.tasks.import_encoder import import_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--initialisation", required=True, help="initialisation name (core/initialisations.py)")
    parser.add_argument("--weights", required=True, help="torchvision resnet34 ImageNet file (.pth, .pt, .safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    import_encoder(weights=args.weights, out_path=args.out, initialisation=args.initialisation)


if __name__ == "__main__":
    main()
