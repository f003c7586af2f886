"""`activation_maps`: what each variant's encoder looks at, as a picture and a number.

For a fixed set of test images (same for every variant: chosen by seed, half positive) a
grid row shows the radiograph, its ground-truth outline, the predicted outline, the
U-Net's Grad-CAM and, for encoders pretrained with a head, that head's Grad-CAM
(Pneumothorax logit for `labels`, predicted cluster for `pseudo_labels`).

The U-Net's Grad-CAM target is the sum of its mask logits inside a region (not over all
pixels, which would explain mostly the background): the post-processed predicted mask
where it is non-empty, else the ground-truth mask (so a missed finding still shows what
drives the logits there), else the pixels above probability 0.5, else nothing (an
all-zero map). The metric is the share of U-Net activation mass inside the dilated
ground-truth mask, over all positive test images, with how many of them used the
prediction and how many the truth as target; with the prediction as target the metric
also reflects how well the prediction overlaps the truth.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from pneumo.core import data, gradcam, initialisations, metrics, models, overlay, runtime
from pneumo.core.inference import load_unet
from pneumo.formats.prepared import load_prepared, split_indices
from pneumo.progress import progress


def _head_model(encoder_path: Path, head_path: Path, variant: str, classes: list[str], device: torch.device):
    """The pretraining classifier (its encoder as pretraining left it, not the U-Net's) and
    its Grad-CAM target, for initialisations whose registry entry has a head."""
    pretraining = initialisations.get(variant).pretraining
    if pretraining is None:
        return None, None
    head_state, _ = models.load_checkpoint(head_path)
    classifier = models.Classifier(head_state["weight"].shape[0])
    classifier.head.load_state_dict(head_state)
    models.load_encoder_into(classifier.encoder, encoder_path)
    return classifier.to(device).eval(), pretraining.gradcam_target(classes)


def _batches(images: np.ndarray, indices: np.ndarray, batch_size: int, dev: torch.device, desc: str):
    """(indices, model input on `dev`) of `images[indices]`, `batch_size` films at a time."""
    for start in progress(range(0, len(indices), batch_size), desc):
        chunk = indices[start : start + batch_size]
        yield chunk, data.to_input(torch.from_numpy(np.array(images[chunk]))).to(dev)


def _unet_cams(
    unet: torch.nn.Module,
    layer: str,
    post: dict,
    images: np.ndarray,
    masks: np.ndarray,
    indices: np.ndarray,
    dilate: int,
    batch_size: int,
    dev: torch.device,
    keep_maps: bool = True,
):
    """U-Net heat maps (only when `keep_maps`: the metric needs only each image's mass
    inside its mask, so the positives' maps are never all held), post-processed
    predictions, target sources and mass inside the dilated mask, batch by batch."""
    heat, predicted, sources, inside = [], [], [], []
    for chunk, x in _batches(images, indices, batch_size, dev, "Grad-CAM (U-Net)"):
        with torch.no_grad():
            probs = torch.sigmoid(unet(x)).cpu().numpy()[:, 0]
        pred = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"])
        regions, source = gradcam.unet_regions(probs, pred, masks[chunk])
        target = gradcam.region_logit_sum(torch.from_numpy(regions))
        cam = gradcam.gradcam(unet, getattr(unet.encoder, layer), x, target)
        inside.append(gradcam.mass_inside(cam, masks[chunk], dilate))
        sources.append(source)
        if keep_maps:
            heat.append(cam)
            predicted.append(pred)
    if not sources:
        empty = np.zeros((0, *images.shape[1:]))
        return empty, empty.astype(bool), np.zeros(0, dtype=object), np.zeros(0)
    if not keep_maps:
        return None, None, np.concatenate(sources), np.concatenate(inside)
    return np.concatenate(heat), np.concatenate(predicted), np.concatenate(sources), np.concatenate(inside)


def _head_cams(model, layer: str, target, images: np.ndarray, indices: np.ndarray, batch_size: int, dev) -> np.ndarray:
    """The pretraining head's heat maps (N, H, W) of `images[indices]`."""
    layer_module = getattr(model.encoder, layer)
    batches = _batches(images, indices, batch_size, dev, "Grad-CAM (head)")
    out = [gradcam.gradcam(model, layer_module, x, target) for _, x in batches]
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]))


def _grid(
    images: np.ndarray,
    masks: np.ndarray,
    shown: np.ndarray,
    pred: np.ndarray,
    unet_heat: np.ndarray,
    head_heat: np.ndarray | None,
    head_label: str | None,
    title: str,
) -> np.ndarray:
    """The picture: one row per shown film (radiograph, truth, prediction, U-Net map, head map)."""
    scale = max(1, 192 // images.shape[1])
    headers = ["radiograph", "truth (green)", "prediction (red)", "U-Net Grad-CAM"]
    if head_heat is not None:
        headers.append(f"head Grad-CAM ({head_label})")
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
    legend = overlay.OUTLINES + overlay.HEAT
    return overlay.grid(grid_rows, headers=headers, title=title, legend=legend) if grid_rows else overlay.blank()


def activation_maps(
    *,
    model_dir: Path,
    encoder_path: Path,
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
    """Grad-CAM of one variant's U-Net (`model_dir`: weights and tuned post-processing) on the
    test split of `siim_dir`: the activation mass inside the dilated true mask over all
    positive test images (written to `metrics_path`, and returned), and a grid of `n_images`
    test films (chosen by `seed`, the same for every variant) with the U-Net's map and, for an
    encoder pretrained with a head, the head's (`grid_path`)."""
    dev = runtime.device_from(device)
    unet, _ = load_unet(model_dir / "model.safetensors", dev)
    post = json.loads((model_dir / "postprocess.json").read_text())
    images, masks, rows = load_prepared(siim_dir)
    test = split_indices(rows, "test")
    present = [
        masks[test[a : a + batch_size]].reshape(-1, masks[0].size).any(1) for a in range(0, len(test), batch_size)
    ]
    positive = test[np.concatenate(present)] if present else test
    negative = np.setdiff1d(test, positive)
    unet_cams = partial(_unet_cams, unet, layer, post, images, masks, dilate=dilate, batch_size=batch_size, dev=dev)

    _, _, sources_pos, inside = unet_cams(positive, keep_maps=False)
    result = {
        "variant": variant,
        "layer": layer,
        "positive_test_images": int(len(positive)),
        "activation_mass_inside_mask": float(inside.mean()) if len(inside) else float("nan"),
        "target_prediction_images": int((sources_pos == gradcam.PREDICTION).sum()),
        "target_truth_images": int((sources_pos == gradcam.TRUTH).sum()),
    }

    shown = overlay.pick_films(positive, negative, n_images, seed)
    heads, head_target = _head_model(encoder_path, head_path, variant, classes, dev)
    unet_heat, pred, _, _ = unet_cams(shown)
    head_heat, head_label = None, None
    if heads is not None:
        head_heat = _head_cams(heads, layer, head_target, images, shown, batch_size, dev)
        head_label = initialisations.get(variant).pretraining.gradcam_label
    title = (
        f"activation maps: {variant}, layer {layer}, mass inside mask {result['activation_mass_inside_mask']:.3f}"
        " (U-Net target: logits in the prediction, else the truth, else p>0.5)"
    )
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(grid_path), _grid(images, masks, shown, pred, unet_heat, head_heat, head_label, title))
    metrics_path.write_text(json.dumps(result, indent=1) + "\n")
    return result
