"""MODEL_CARD.md from its template (core/model_card.md): the expected text, byte for byte,
for fixed inputs."""

import pytest

from pneumo.core import model_card
from pneumo.tasks import evaluate

ROWS = [{"split": s, "image_id": f"1.2.{i}"} for i, s in enumerate(["train"] * 5 + ["val"] * 3 + ["test"] * 2)]
FULL_META = {
    "variant": "labels",
    "encoder": "resnet34",
    "in_channels": 1,
    "best_epoch": 11,
    "params": {"lr": 0.001, "batch_size": 16, "pixel_loss": "bce"},
    "selection": "lowest validation loss (Dice + BCE) among epochs with a trained encoder",
    "input_scaling": {"mean": 0.5, "std": 0.25, "of": "pixel / 255"},
    "runtime": {"device": "cpu", "amp": True, "channels_last": False, "processes": 2},
}
SPARSE_META = {"variant": "none", "encoder": "resnet34", "in_channels": 1, "best_epoch": 0}  # an older checkpoint


def result(val: float, val_empty: float) -> dict:
    return {
        "variant": "x",
        "test": {
            "images": 2,
            "positive_images": 1,
            "siim_dice": 0.8333,
            "dice_positive": 0.41849,
            "dice_pooled": 0.6051,
            "iou": 0.8182,
            "auc": 0.8449,
        },
        "val": {"siim_dice": val},
        "postprocess": {"top": 0.9, "min_area": 16, "bottom": 0.4, "image_size": 64},
        "all_empty": {"siim_dice": 0.5, "dice_positive": 0.0, "dice_pooled": 0.0, "iou": 0.5, "auc": 0.5},
        "val_all_empty": val_empty,
    }


# written by evaluate's f-string before the template, for these inputs
SYNTHETIC_CARD = """\
# Model card: U-Net, encoder initialisation `labels`

## Intended use
Research on how the encoder's initialisation changes pneumothorax segmentation (reproducing
and extending the study below). Not for diagnosis, triage or any clinical decision: this is
not a medical device, and it has not been validated on patients or against radiologists.

- Architecture: U-Net, resnet34 encoder, 1 input channel, 64 px.
- Encoder initialisation: `labels`; kept epoch 11 (lowest validation loss (Dice + BCE) among epochs with a trained encoder).
- Data: SIIM-ACR (synthetic) 10 images, patient-level split train 5 /
  val 3 / test 2.
- Pretraining data: CXR-14, 600 images after leaving out 300
  images of patients that appear in the SIIM data (leakage control).

## Training
- Hyperparameters (`train_unet` params): batch_size 16, lr 0.001, pixel_loss bce.
- Loss Dice + pixel loss.
- Input: grayscale, pixel / 255 standardised with mean 0.5 and
  std 0.25.
- Trained on cpu (2 process(es), AMP True).

## Post-processing (tuned on validation for SIIM Dice, frozen for test)
top threshold 0.9, minimum area 16 px, bottom threshold 0.4. It scores SIIM Dice,
pooled Dice and IoU; Dice on positives scores the pixels above 0.5 with no image-level
gate (the segmentation endpoint).

## Test results (2 images, 1 with pneumothorax)
| prediction | SIIM Dice | Dice (positives) | pooled Dice | IoU | AUC |
|---|---|---|---|---|---|
| this model | 0.833 | 0.418 | 0.605 | 0.818 | 0.845 |
| all empty | 0.500 | 0.000 | 0.000 | 0.500 | 0.500 |

Validation SIIM Dice after post-processing: 0.804
(all empty: 0.756).

## Metric definitions
- `siim_dice`: SIIM-ACR's official metric: mean over images of Dice, an empty prediction
  on an empty image scoring 1 (so predicting "no pneumothorax" everywhere scores the share
  of empty images: the `all_empty` row).
- `dice_positive`: mean Dice over the images that have a pneumothorax only, of the pixels
  above the fixed threshold (no image-level gate).
- `dice_pooled`: Dice over all pixels of all test images pooled together.
- `iou`: mean per-image IoU (empty/empty = 1).
- `auc`: image-level pneumothorax presence AUC, scored by the maximum pixel probability.

## Limits
- Trained and tested on **synthetic data** (the embedded phantoms): these numbers say the pipeline works, not how the model does on patients.
- Input size 64 px; masks are predicted at that size and resized back.

## Data and terms of use
- SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019; SIIM and ACR): the competition's data
  rules apply; accept them on Kaggle before downloading. The films are NIH ChestX-ray14 images.
- NIH ChestX-ray14 (NIH Clinical Center): usage unrestricted, provided the NIH download site
  is linked, the NIH Clinical Center acknowledged, and this paper cited: Wang X, Peng Y, Lu L,
  Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks
  on Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017.
- The embedded phantoms (`synthesize`) hold no patient data.

## Citation
*Transfer Learning for Detection and Segmentation of Pneumothorax from Chest X-ray Images* (the study this pipeline reproduces; see CITATION.cff).
"""  # noqa: E501 (the card's own lines)

REAL_DATA_SPARSE_CARD = """\
# Model card: U-Net, encoder initialisation `none`

## Intended use
Research on how the encoder's initialisation changes pneumothorax segmentation (reproducing
and extending the study below). Not for diagnosis, triage or any clinical decision: this is
not a medical device, and it has not been validated on patients or against radiologists.

- Architecture: U-Net, resnet34 encoder, 1 input channel, 64 px.
- Encoder initialisation: `none`; kept epoch 0 (lowest validation loss).
- Data: SIIM-ACR 10 images, patient-level split train 5 /
  val 3 / test 2.
- Pretraining data: CXR-14, ? images after leaving out ?
  images of patients that appear in the SIIM data (leakage control).

## Training
- Hyperparameters (`train_unet` params): not recorded.
- Loss Dice + pixel loss.
- Input: grayscale, pixel / 255 standardised with mean ? and
  std ?.
- Trained on ? (1 process(es), AMP False).

## Post-processing (tuned on validation for SIIM Dice, frozen for test)
top threshold 0.9, minimum area 16 px, bottom threshold 0.4. It scores SIIM Dice,
pooled Dice and IoU; Dice on positives scores the pixels above 0.5 with no image-level
gate (the segmentation endpoint).

## Test results (2 images, 1 with pneumothorax)
| prediction | SIIM Dice | Dice (positives) | pooled Dice | IoU | AUC |
|---|---|---|---|---|---|
| this model | 0.833 | 0.418 | 0.605 | 0.818 | 0.845 |
| all empty | 0.500 | 0.000 | 0.000 | 0.500 | 0.500 |

Validation SIIM Dice after post-processing: nan
(all empty: nan).

## Metric definitions
- `siim_dice`: SIIM-ACR's official metric: mean over images of Dice, an empty prediction
  on an empty image scoring 1 (so predicting "no pneumothorax" everywhere scores the share
  of empty images: the `all_empty` row).
- `dice_positive`: mean Dice over the images that have a pneumothorax only, of the pixels
  above the fixed threshold (no image-level gate).
- `dice_pooled`: Dice over all pixels of all test images pooled together.
- `iou`: mean per-image IoU (empty/empty = 1).
- `auc`: image-level pneumothorax presence AUC, scored by the maximum pixel probability.

## Limits
- Trained on the SIIM-ACR data given by `data.siim_root`.
- Input size 64 px; masks are predicted at that size and resized back.

## Data and terms of use
- SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019; SIIM and ACR): the competition's data
  rules apply; accept them on Kaggle before downloading. The films are NIH ChestX-ray14 images.
- NIH ChestX-ray14 (NIH Clinical Center): usage unrestricted, provided the NIH download site
  is linked, the NIH Clinical Center acknowledged, and this paper cited: Wang X, Peng Y, Lu L,
  Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks
  on Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017.
- The embedded phantoms (`synthesize`) hold no patient data.

## Citation
*Transfer Learning for Detection and Segmentation of Pneumothorax from Chest X-ray Images* (the study this pipeline reproduces; see CITATION.cff).
"""  # noqa: E501 (the card's own lines)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((FULL_META, result(0.8041, 0.75555), ROWS, {"images": 600, "excluded_leakage": 300}, True), SYNTHETIC_CARD),
        ((SPARSE_META, result(float("nan"), float("nan")), ROWS, {}, False), REAL_DATA_SPARSE_CARD),
    ],
    ids=["synthetic", "real-data-sparse-meta"],
)
def test_card_is_byte_identical_to_the_f_string_it_replaced(args, expected):
    assert evaluate.card_text(*args) == expected


def test_render_refuses_a_missing_or_unknown_field():
    fields = dict.fromkeys(model_card.template().get_identifiers(), "x")
    assert "$" not in model_card.render(**fields)
    with pytest.raises(ValueError, match=r"missing \['amp'\], fields not in the template \[\]"):
        model_card.render(**{k: v for k, v in fields.items() if k != "amp"})
    with pytest.raises(ValueError, match=r"missing \[\], fields not in the template \['typo'\]"):
        model_card.render(**fields, typo="x")
