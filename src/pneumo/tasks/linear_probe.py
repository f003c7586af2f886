"""`linear_probe`: what each frozen encoder knows before any fine-tuning, of CXR-14's findings
and of the target's pneumothorax.

Every initialisation's encoder of every run (`models/encoders/<name>-<run>.safetensors`) is
frozen; the output of each of its four ResNet34 layers is averaged over space (64, 128, 256
and 512 numbers per film) and standardised, and a logistic regression (scikit-learn, L2, `C`)
is fitted per class on those features, layer by layer:

- CXR-14: fitted on the training split and scored on the `probe` split, which no stage trains,
  selects or stops on (prepare_cxr14 keeps it apart: `formats.prepared.SEEN_SPLITS` are the
  splits encoders see). Scores: the ROC AUC per class, their mean over the classes (macro AUC)
  and the Pneumothorax AUC; `encoders` holds layer4 (the last stage, the headline), `layers`
  every layer. Classes that the training or the probe split lacks, or holds on every film, are
  left out and named by omission in `classes`.
- SIIM, the target: the image-level label (any mask pixel) fitted on the SIIM training films
  and scored on the validation films, ROC AUC per layer. No encoder trained on SIIM; the
  U-Nets do, after this.

Intervals are the report's (`pneumo.core.bootstrap.seed_aware`): the same image resamples of
the scored split for every encoder, layer and run (stratified on any finding, or on the
pneumothorax label), runs paired by index, so an interval covers the training runs and which
films were scored, and each difference from the random `none` encoder is paired on both.
Nothing is called here: the probe describes the encoders, the segmentation table judges them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pneumo.core import bootstrap, initialisations, metrics, runtime
from pneumo.core.inference import encoder_features
from pneumo.formats.prepared import load_prepared, split_indices

log = logging.getLogger(__name__)

LAYERS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}  # ResNet34's layers and their widths
STAGES = (2, 3, 4, 5)  # their places in the encoder's outputs (0: the input, 1: the stem)
HEADLINE = "layer4"
PROBE_SPLIT = "probe"  # prepare_cxr14's split that no encoder sees
Scored = dict[str, Callable[[np.ndarray], np.ndarray]]  # score name -> (runs, 1 + B, classes) -> (runs, 1 + B)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, c: float) -> np.ndarray:
    """Decision scores (N_test, classes) of one standardised L2 logistic regression per class."""
    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    return np.stack([LogisticRegression(C=c, max_iter=5000).fit(a, y).decision_function(b) for y in y_train.T], axis=1)


def auc_samples(scores: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, classes) ROC AUC of each class on each row of image `counts` (a row of ones: the data)."""
    columns = []
    with np.errstate(invalid="ignore"):  # a resample without a class's positives: NaN (nanmean leaves it out)
        for j in range(truth.shape[1]):
            pos = truth[:, j] > 0
            columns.append(metrics.weighted_auc(scores[pos, j], scores[~pos, j], counts[:, pos], counts[:, ~pos]))
    return np.stack(columns, axis=1)


def _key(name: str) -> str:
    return re.sub(r"\W+", "_", name.lower())


def layer_columns() -> dict[str, slice]:
    """Each layer's columns in `encoder_features(..., stages=STAGES)`."""
    ends = np.cumsum(list(LAYERS.values()))
    return {name: slice(int(end) - width, int(end)) for (name, width), end in zip(LAYERS.items(), ends, strict=True)}


class Probe:
    """One probing task: films fitted on (`fit`) and scored (`scored`), their 0/1 `truth`
    (films x classes) and the image resamples of the scored films (`counts`, the data first)."""

    def __init__(self, images: np.ndarray, truth: np.ndarray, fit: np.ndarray, scored: np.ndarray, counts: np.ndarray):
        self.images, self.truth, self.fit, self.scored, self.counts = images, truth, fit, scored, counts

    def aucs(self, encoder: Path, c: float, dev) -> dict[str, np.ndarray]:
        """layer -> (1 + B, classes) AUCs of one encoder checkpoint."""
        films = np.concatenate([self.fit, self.scored])
        x = encoder_features(encoder, self.images, dev, indices=films, stages=STAGES)
        a, b = x[: len(self.fit)], x[len(self.fit) :]
        return {
            layer: auc_samples(
                fit_probe(a[:, cols], self.truth[self.fit], b[:, cols], c), self.truth[self.scored], self.counts
            )
            for layer, cols in layer_columns().items()
        }


def _row(e: bootstrap.Estimate, lowest: float = 0.0) -> dict:  # clipped to where an AUC (difference) can lie
    return {"value": e.value, "low": max(e.low, lowest), "high": min(e.high, 1.0)}


def _estimate(values: np.ndarray) -> bootstrap.Estimate:  # values (runs, 1 + B)
    return bootstrap.seed_aware(values[:, 0], values[:, 1:])


def entries(per_encoder: dict[str, np.ndarray], scored: Scored) -> dict[str, dict]:
    """encoder -> each score's seed-aware interval with its per-run values, and (but for the
    reference) its difference from `none`, paired by run and image resample."""
    reference = per_encoder.get(initialisations.REFERENCE)
    out = {}
    for name, values in per_encoder.items():
        entry = {
            s: _row(_estimate(f(values))) | {"per_run": [float(x) for x in f(values)[:, 0]]} for s, f in scored.items()
        }
        if reference is not None and name != initialisations.REFERENCE:
            entry["minus_none"] = {s: _row(_estimate(f(values) - f(reference)), -1.0) for s, f in scored.items()}
        out[name] = entry
    return out


def _probe_all(probe: Probe, encoders_dir: Path, encoders: list[str], run_ids: list[int], c: float, dev, what: str):
    """encoder -> layer -> (runs, 1 + B, classes) AUCs."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in encoders:
        runs = [probe.aucs(encoders_dir / f"{name}-{r}.safetensors", c, dev) for r in run_ids]
        out[name] = {layer: np.stack([run[layer] for run in runs]) for layer in LAYERS}
        log.info("%s %s: %s AUC %s", what, name, HEADLINE, " ".join(f"{run[HEADLINE][0].mean():.3f}" for run in runs))
    return out


def _cxr14_probe(
    images_dir: Path, classes: list[str], resamples: int, seed: int
) -> tuple[Probe | None, list[str], dict]:
    """The CXR-14 task (None when no class can be scored), the scored classes, the split facts."""
    images, _, rows = load_prepared(images_dir)
    fit, scored = split_indices(rows, "train"), split_indices(rows, PROBE_SPLIT)
    truth = np.array([[float(r[name]) for name in classes] for r in rows], dtype=np.float32)
    # a class is scored where each split holds films with it and films without it
    present = [
        j for j in range(len(classes))
        if 0 < truth[scored, j].sum() < len(scored) and 0 < truth[fit, j].sum() < len(fit)
    ]  # fmt: skip
    split = {"fit": "train", "fit_images": int(len(fit)), "scored": PROBE_SPLIT, "scored_images": int(len(scored))}
    if not present:
        return None, [], split
    classes, truth = [classes[j] for j in present], truth[:, present]
    any_finding = truth[scored][:, [j for j, name in enumerate(classes) if name != "No Finding"]].sum(1) > 0
    counts = np.vstack([np.ones(len(scored), np.int64), bootstrap.stratified_counts(any_finding, resamples, seed)])
    return Probe(images, truth, fit, scored, counts), classes, split


def _siim_probe(siim_dir: Path, resamples: int, seed: int) -> tuple[Probe | None, dict]:
    """The SIIM task (None unless the validation films hold both labels) and its split facts."""
    images, _, rows = load_prepared(siim_dir)
    fit, scored = split_indices(rows, "train"), split_indices(rows, "val")
    truth = np.array([[float(int(r["mask_pixels"]) > 0)] for r in rows], dtype=np.float32)
    positives = int(truth[scored].sum())
    split = {"fit": "train", "fit_images": int(len(fit)), "scored": "val", "scored_images": int(len(scored))}
    split["scored_positives"] = positives
    if not 0 < positives < len(scored) or not 0 < truth[fit].sum() < len(fit):
        return None, split
    counts = np.vstack(
        [np.ones(len(scored), np.int64), bootstrap.stratified_counts(truth[scored, 0] > 0, resamples, seed)]
    )
    return Probe(images, truth, fit, scored, counts), split


def linear_probe(
    *,
    images_dir: Path,
    siim_dir: Path,
    encoders_dir: Path,
    encoders: list[str],
    run_ids: list[int],
    classes: list[str],
    c: float,
    resamples: int,
    seed: int,
    out_path: Path,
    device: str = "auto",
) -> dict:
    """Probe every encoder of every run on CXR-14 and on SIIM; write the table (per encoder:
    per-run scores, their seed-aware mean, the difference from `none`; per layer) to
    `out_path` and return it."""
    dev = runtime.device_from(device)
    cxr14, classes, split = _cxr14_probe(images_dir, classes, resamples, seed)
    table: dict = {
        "split": split | {"untouched": f"no encoder trains, selects or stops on the {PROBE_SPLIT} split"},
        "classes": classes,
        "features": "each ResNet34 layer's output, global average pooled, standardised; the headline is layer4 (512)",
        "probe": f"logistic regression per class (L2, C={c})",
        "runs": run_ids,
        "encoders": {},
        "layers": {},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if cxr14 is None:  # e.g. a handful of real sample films: say so, do not stop the pipeline
        table["skipped"] = f"no class is both present and absent in the {PROBE_SPLIT} split: nothing probed"
        log.warning("linear probe: %s", table["skipped"])
    else:
        scored: Scored = {"macro_auc": lambda v: np.nanmean(v, axis=2)}
        if "Pneumothorax" in classes:  # a resample without a class's positives leaves that class out
            pneumothorax = classes.index("Pneumothorax")
            scored["pneumothorax_auc"] = lambda v: v[..., pneumothorax]
        per_layer = _probe_all(cxr14, encoders_dir, encoders, run_ids, c, dev, "CXR-14")
        table["layers"] = _by_layer(per_layer, scored)
        for name, values in per_layer.items():  # the headline: layer4's entry, with its AUC per class
            by_class = {_key(k): float(values[HEADLINE][:, 0, j].mean()) for j, k in enumerate(classes)}
            table["encoders"][name] = table["layers"][name][HEADLINE] | {"by_class": by_class}
        table["method"] = bootstrap.METHODS[_estimate(per_layer[encoders[0]][HEADLINE].mean(2)).method]
    table["siim"] = _siim(siim_dir, encoders_dir, encoders, run_ids, c, resamples, seed, dev)
    out_path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def _by_layer(per_layer: dict[str, dict[str, np.ndarray]], scored: Scored) -> dict[str, dict]:
    """encoder -> layer -> entry (`entries`)."""
    rows = {layer: entries({n: v[layer] for n, v in per_layer.items()}, scored) for layer in LAYERS}
    return {name: {layer: rows[layer][name] for layer in LAYERS} for name in per_layer}


def _siim(siim_dir: Path, encoders_dir: Path, encoders: list[str], run_ids: list[int], c, resamples, seed, dev) -> dict:
    """The SIIM probe's table: its split, and per encoder and layer the pneumothorax AUC."""
    probe, split = _siim_probe(siim_dir, resamples, seed)
    out: dict = {"split": split, "label": "pneumothorax (any mask pixel)", "encoders": {}}
    if probe is None:
        out["skipped"] = "the SIIM training or validation films lack one of the two labels: nothing probed"
        log.warning("SIIM probe: %s", out["skipped"])
        return out
    per_layer = _probe_all(probe, encoders_dir, encoders, run_ids, c, dev, "SIIM")
    out["encoders"] = _by_layer(per_layer, {"auc": lambda v: v[..., 0]})
    return out
