"""DVC stage `pretrain_encoder@<initialisation>-<run>`: the U-Net's ResNet34 encoder pretrained on
CXR-14 as its registry entry says: the true labels (`labels`), the run's pseudo-labels
(`pseudo_labels`) or a control of them (`permuted_clusters`, `raw_clusters`). The encoder and
the head are saved apart; the U-Net loads only the encoder."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import initialisations, runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.pretrain_encoder import pretrain_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="initialisation name (core/initialisations.py), e.g. labels")
    parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--labels", type=Path, required=True, help="CSV of CXR-14's labels by image_id")
    parser.add_argument("--pseudo-labels", type=Path, required=True, help="the run's folder of cluster CSVs")
    parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
    parser.add_argument("--head", type=Path, required=True, help="classification head checkpoint to write")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    rt = runtime.from_params(p, args.seed)
    targets = {"labels": args.labels, "pseudo_labels": args.pseudo_labels}  # by the entry's `Pretraining.targets`
    pretraining = initialisations.get(args.target).pretraining
    # the keys dvc.yaml declares, by name (`initialisations` is the matrix, not a setting of one run)
    stage = {
        "max_epochs": p["pretrain_encoder"]["max_epochs"],
        "patience": p["pretrain_encoder"]["patience"],
        "min_delta": p["pretrain_encoder"]["min_delta"],
        "batch_size": p["pretrain_encoder"]["batch_size"],
        "lr": p["pretrain_encoder"]["lr"],
    }
    pretrain_encoder(
        target=args.target,
        images_dir=args.images,
        # none: the task names the error
        targets_csv=pretraining.targets_file(targets[pretraining.targets]) if pretraining else None,
        out_path=args.out,
        head_path=args.head,
        live_dir=args.live,
        checkpoint_path=args.checkpoint,
        classes=p["prepare_cxr14"]["classes"],
        seed=args.seed,
        resume=rt.resume,
        rt=rt,
        params=stage,
        **stage,
    )


if __name__ == "__main__":
    main()
