"""Which self-supervised method for `train_ssl`: VICReg against Barlow Twins (both lightly's
loss and projection head), the same ResNet34 encoder, radiograph views (params.yaml's
train_ssl section), batch, optimiser and seed, a constant learning rate; after every few
epochs, a linear probe's macro AUC (`pneumo.tasks.linear_probe`'s fit and score: frozen pooled
features, a logistic regression per class fitted on the training split, scored here on the
validation split, which the stage no longer scores: it has the `probe` split for that) against
the same random encoder before training. Not a test: a measurement that chose the
method (docs/experiments.md). Prints one JSON line per probe.

    python benchmarks/ssl_methods.py --images data/prepared/cxr14 --epochs 12 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from lightly.loss import BarlowTwinsLoss, VICRegLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead, VICRegProjectionHead
from lightly.transforms.multi_view_transform import MultiViewTransform

from pneumo.core import data, models, runtime
from pneumo.formats.prepared import load_prepared, split_indices
from pneumo.tasks import linear_probe, train_ssl

METHODS = {
    "vicreg": (VICRegProjectionHead, VICRegLoss),
    "barlow_twins": (BarlowTwinsProjectionHead, BarlowTwinsLoss),
}


def probe(encoder, images, train, test, truth, c: float) -> float:
    encoder.eval()
    with torch.no_grad():
        x = torch.cat(
            [
                encoder(data.to_input(torch.from_numpy(np.array(images[i : i + 128]))))[-1].mean(dim=(2, 3))
                for i in range(0, len(images), 128)
            ]
        ).numpy()
    scores = linear_probe.fit_probe(x[train], truth[train], x[test], c)
    return float(linear_probe.auc_samples(scores, truth[test], np.ones((1, len(test))))[0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("data/prepared/cxr14"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--every", type=int, default=3, help="probe every this many epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    p = yaml.safe_load(Path("params.yaml").read_text())
    ssl, classes = p["train_ssl"], p["prepare_cxr14"]["classes"]
    images, _, rows = load_prepared(args.images)
    train, test = split_indices(rows, "train"), split_indices(rows, "val")
    truth = np.array([[float(r[k]) for k in classes] for r in rows], dtype=np.float32)
    rt = runtime.start("cpu", amp=True)
    view = train_ssl.radiograph_view(
        int(images.shape[1]),
        ssl["crop"],
        ssl["rotate_deg"],
        ssl["gamma"],
        ssl["brightness"],
        ssl["contrast"],
        ssl["blur"],
        ssl["noise"],
    )
    views = train_ssl.Views(images, train, MultiViewTransform([view, view]), args.seed)
    for method, (head_class, loss_class) in METHODS.items():
        runtime.seed_everything(args.seed)
        encoder = models.build_encoder(1)
        head, criterion = head_class(encoder.out_channels[-1], *ssl["projector"]), loss_class()
        optimizer = torch.optim.AdamW(
            [*encoder.parameters(), *head.parameters()], lr=ssl["lr"], weight_decay=ssl["weight_decay"]
        )
        c = p["linear_probe"]["c"]
        print(
            json.dumps(
                {"method": method, "epoch": 0, "macro_auc": round(probe(encoder, images, train, test, truth, c), 4)}
            )
        )
        order = np.random.default_rng(args.seed)
        for epoch in range(args.epochs):
            started, batch = time.perf_counter(), ssl["batch_size"]
            encoder.train()
            head.train()
            perm = order.permutation(len(train))
            for start in range(0, len(perm) - batch + 1, batch):
                pairs = torch.stack([views[(epoch, int(i))][0] for i in perm[start : start + batch]])
                with rt.autocast():
                    z = head(encoder(pairs.flatten(0, 1))[-1].mean(dim=(2, 3))).float().view(batch, 2, -1)
                loss = criterion(z[:, 0], z[:, 1])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if (epoch + 1) % args.every == 0 or epoch + 1 == args.epochs:
                auc = probe(encoder, images, train, test, truth, c)
                seconds = round(time.perf_counter() - started, 1)
                print(
                    json.dumps({"method": method, "epoch": epoch + 1, "macro_auc": round(auc, 4), "epoch_s": seconds})
                )


if __name__ == "__main__":
    main()
