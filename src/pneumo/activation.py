"""`activation_maps`: what each variant's encoder looks at, as a picture and a number.

For a fixed set of test images (same for every variant: chosen by seed, half positive) a
grid row shows the radiograph, its ground-truth outline, the predicted outline, the
U-Net's Grad-CAM (target: sum of mask logits) and, for encoders pretrained with a head,
that head's Grad-CAM (Pneumothorax logit for `labels`, predicted cluster for
`pseudo_labels`). The metric is the share of U-Net activation mass inside the dilated
ground-truth mask, over all positive test images.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from pneumo import gradcam, metrics, models, overlay, train
from pneumo.prepare import load_prepared, split_indices
from pneumo.segment import load_unet


def _head_model(head_path: Path, variant: str, classes: list[str], device: torch.device):
    """The pretraining classifier (U-Net's own encoder is not used here) and its Grad-CAM target."""
    if variant not in ("labels", "pseudo_labels") or not head_path.exists():
        return None, None
    encoder_path = head_path.parent.parent / "encoders" / head_path.name
    head_state, _ = models.load_checkpoint(head_path)
    classifier = models.Classifier(head_state["weight"].shape[0])
    classifier.head.load_state_dict(head_state)
    models.load_encoder_into(classifier.encoder, encoder_path)
    target = gradcam.class_logit(classes.index("Pneumothorax")) if variant == "labels" else gradcam.predicted_class
    return classifier.to(device).eval(), target


def activation_maps(
    *,
    model_dir: Path,
    head_path: Path,
    siim_dir: Path,
    grid_path: Path,
    metrics_path: Path,
    variant: str,
    classes: list[str],
    layer: str,
    n_images: int,
    dilate: int,
    seed: int,
    batch_size: int = 32,
    device: str = "auto",
) -> dict:
    dev = train.device_from(device)
    unet, _ = load_unet(model_dir / "model.safetensors", dev)
    post = json.loads((model_dir / "postprocess.json").read_text())
    images, masks, rows = load_prepared(siim_dir)
    test = split_indices(rows, "test")
    positive = test[masks[test].reshape(len(test), -1).any(1)]
    negative = np.setdiff1d(test, positive)

    def cams(model, stage, indices, target):
        out = []
        for start in range(0, len(indices), batch_size):
            x = train.to_input(torch.from_numpy(np.array(images[indices[start : start + batch_size]]))).to(dev)
            out.append(gradcam.gradcam(model, getattr(stage, layer), x, target))
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]))

    heat_pos = cams(unet, unet.encoder, positive, gradcam.mask_logit_sum)
    inside = gradcam.mass_inside(heat_pos, masks[positive], dilate)
    result = {
        "variant": variant,
        "layer": layer,
        "positive_test_images": int(len(positive)),
        "activation_mass_inside_mask": float(inside.mean()) if len(inside) else float("nan"),
    }

    rng = np.random.default_rng(seed)
    half = n_images // 2
    shown = np.concatenate(
        [rng.permutation(positive)[:half], rng.permutation(negative)[: n_images - min(half, len(positive))]]
    )
    shown = np.sort(shown)[:n_images]
    heads, head_target = _head_model(head_path, variant, classes, dev)
    unet_heat = cams(unet, unet.encoder, shown, gradcam.mask_logit_sum)
    head_heat = cams(heads, heads.encoder, shown, head_target) if heads is not None else None
    with torch.no_grad():
        probs = (
            torch.sigmoid(unet(train.to_input(torch.from_numpy(np.array(images[shown]))).to(dev))).cpu().numpy()[:, 0]
        )
    pred = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"])
    scale = max(1, 192 // images.shape[1])
    grid_rows = []
    for k, i in enumerate(shown):
        image = np.asarray(images[i])
        row = [
            overlay.outline(image, [], scale),
            overlay.outline(image, [(masks[i], overlay.TRUTH)], scale),
            overlay.outline(image, [(pred[k], overlay.PREDICTION)], scale),
            overlay.heatmap(image, unet_heat[k], scale),
        ]
        if head_heat is not None:
            row.append(overlay.heatmap(image, head_heat[k], scale))
        grid_rows.append(row)
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(grid_path), overlay.grid(grid_rows) if grid_rows else np.full((8, 8, 3), 255, np.uint8))
    metrics_path.write_text(json.dumps(result, indent=1) + "\n")
    return result
