"""pneumo: pneumothorax segmentation with encoder transfer learning, as a DVC pipeline.

The layers, each importing only the ones below it (no cycles):

    stages/<stage>.py          one thin script per DVC stage: main() reads its arguments and
          |                    params (by literal key), one call
    pneumo.tasks.<stage>       one module per stage, named like it: what the stage does;
          |                    only its stage script (and tests) import it
    pneumo.core                what stages share: models, the encoder-initialisation
          |                    registry, runtime (device, processes, seeding), data and
          |                    augmentation, the training loop, validation scoring,
          |                    checkpoints, inference, the prediction engine, the model
          |                    card, the bootstrap, metrics, Grad-CAM, pictures
    pneumo.formats             files: SIIM DICOM and RLE, CXR-14 PNG and labels (as
                               published), prepared arrays and per-image results (what
                               stages hand each other); no model code

Beside them: `pneumo.params` (reads params.yaml), `pneumo.launch` (in-process or torchrun),
`pneumo.cli` (`pneumo predict`). `pneumo.rle` and `pneumo.dicom` are the stable public names:
they re-export the functions of `pneumo.formats.rle` and `pneumo.formats.dicom`; and
`pneumo.load_model(path)` is `pneumo.core.predictor.load_model`, a trained model as a Python
object, imported when first used so that `import pneumo` stays light (no torch).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def __getattr__(name: str):
    """`pneumo.load_model`, imported on first use (PEP 562)."""
    if name == "load_model":
        from pneumo.core.predictor import load_model

        return load_model
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")
