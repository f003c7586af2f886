"""`linear_probe`: how much finding information each encoder holds before any fine-tuning.

Every initialisation's encoder of every run (`models/encoders/<name>-<run>.safetensors`) is
frozen; its features (the last stage, global average pooled: 512 numbers per film) of the
prepared CXR-14 films are standardised and a logistic regression per class (scikit-learn,
L2, `C`) is fitted on the training split and scored on the validation split, which no
encoder was trained on. Pretraining used it to choose its epoch: by a label-free loss for
every encoder but `labels`, which chose its epoch by its BCE on these films' labels, a small
advantage to it here (prepare_cxr14 keeps no CXR-14 test split for the probe alone). The scores are the
ROC AUC per class, their mean over the classes (macro AUC) and the Pneumothorax AUC (classes
that the held-out split lacks, or holds on every film, are left out and named by omission in
`classes`).

Intervals are the report's (`pneumo.core.bootstrap.seed_aware`): the same image resamples
of the validation split for every encoder and run (stratified on any finding), runs paired
by index, so an encoder's interval covers its training runs and which films were probed,
and each difference from the random `none` encoder is paired on both. Nothing is called
here: the probe describes the encoders, the segmentation table judges them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pneumo.core import bootstrap, initialisations, metrics, runtime
from pneumo.core.inference import encoder_features
from pneumo.formats.prepared import load_prepared, split_indices

log = logging.getLogger(__name__)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, c: float) -> np.ndarray:
    """Decision scores (N_test, classes) of one standardised L2 logistic regression per class."""
    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    return np.stack([LogisticRegression(C=c, max_iter=5000).fit(a, y).decision_function(b) for y in y_train.T], axis=1)


def auc_samples(scores: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, classes) ROC AUC of each class on each row of image `counts` (a row of ones: the data)."""
    columns = []
    for j in range(truth.shape[1]):
        pos = truth[:, j] > 0
        columns.append(metrics.weighted_auc(scores[pos, j], scores[~pos, j], counts[:, pos], counts[:, ~pos]))
    return np.stack(columns, axis=1)


def _key(name: str) -> str:
    return re.sub(r"\W+", "_", name.lower())


def linear_probe(
    *,
    images_dir: Path,
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
    """Probe every encoder of every run; write the table (per encoder: per-run scores, their
    seed-aware mean, the difference from `none`) to `out_path` and return it."""
    dev = runtime.device_from(device)
    images, _, rows = load_prepared(images_dir)
    train, test = split_indices(rows, "train"), split_indices(rows, "val")
    truth = np.array([[float(r[name]) for name in classes] for r in rows], dtype=np.float32)
    # a class is scored where both splits hold it and the held-out one also lacks it somewhere
    present = [j for j in range(len(classes)) if 0 < truth[test, j].sum() < len(test) and 0 < truth[train, j].sum()]
    classes = [classes[j] for j in present]
    truth = truth[:, present]
    any_finding = truth[test][:, [j for j, name in enumerate(classes) if name != "No Finding"]].sum(1) > 0
    counts = np.vstack([np.ones(len(test), np.int64), bootstrap.stratified_counts(any_finding, resamples, seed)])
    # (runs, 1 + B, classes) -> (runs, 1 + B); a resample without a class's positives leaves that class out
    scored = {"macro_auc": lambda v: np.nanmean(v, axis=2)}
    if "Pneumothorax" in classes:
        pneumothorax = classes.index("Pneumothorax")
        scored["pneumothorax_auc"] = lambda v: v[..., pneumothorax]

    table: dict = {
        "split": {"train": int(len(train)), "test": "val", "test_images": int(len(test))},
        "classes": classes,
        "features": "last encoder stage, global average pooled (512), standardised",
        "probe": f"logistic regression per class (L2, C={c})",
        "runs": run_ids,
        "encoders": {},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not classes:  # e.g. a handful of real sample films: say so, do not stop the pipeline
        table["skipped"] = "no class is both present and absent in the held-out split: nothing probed"
        log.warning("linear probe: %s", table["skipped"])
        out_path.write_text(json.dumps(table, indent=1) + "\n")
        return table

    per_class: dict[str, np.ndarray] = {}  # encoder -> (runs, 1 + B, classes)
    for name in encoders:
        runs = []
        for r in run_ids:
            x = encoder_features(encoders_dir / f"{name}-{r}.safetensors", images, dev)
            scores = fit_probe(x[train], truth[train], x[test], c)
            runs.append(auc_samples(scores, truth[test], counts))
            log.info("%s-%d: macro AUC %.3f", name, r, runs[-1][0].mean())
        per_class[name] = np.stack(runs)

    def estimate(values: np.ndarray) -> bootstrap.Estimate:  # values (runs, 1 + B)
        return bootstrap.seed_aware(values[:, 0], values[:, 1:])

    def row(e: bootstrap.Estimate, lowest: float = 0.0) -> dict:  # clipped to where an AUC (difference) can lie
        return {"value": e.value, "low": max(e.low, lowest), "high": min(e.high, 1.0)}

    reference = per_class.get(initialisations.REFERENCE)
    for name, values in per_class.items():
        entry = {
            s: row(estimate(f(values))) | {"per_run": [float(x) for x in f(values)[:, 0]]} for s, f in scored.items()
        }
        entry["by_class"] = {_key(k): float(values[:, 0, j].mean()) for j, k in enumerate(classes)}
        if reference is not None and name != initialisations.REFERENCE:
            entry["minus_none"] = {s: row(estimate(f(values) - f(reference)), -1.0) for s, f in scored.items()}
        table["encoders"][name] = entry
    table["method"] = bootstrap.METHODS[estimate(per_class[encoders[0]].mean(2)).method]
    out_path.write_text(json.dumps(table, indent=1) + "\n")
    return table
