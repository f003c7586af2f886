"""DVC stage `pretrain_encoder@<initialisation>-<run>`: the U-Net's ResNet34 encoder pretrained on
CXR-14 as its registry entry says: the true labels (`labels`) or the run's pseudo-labels
(`pseudo_labels`). The encoder and the head are saved apart; the U-Net loads only the encoder."""

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
    parser.add_argument("--pseudo-labels", type=Path, required=True, help="CSV of the run's pseudo-labels by image_id")
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
    pretrain_encoder(
        target=args.target,
        images_dir=args.images,
        targets_csv=targets[pretraining.targets] if pretraining else None,  # none: the task names the error
        out_path=args.out,
        head_path=args.head,
        live_dir=args.live,
        checkpoint_path=args.checkpoint,
        classes=p["prepare_cxr14"]["classes"],
        seed=args.seed,
        resume=rt.resume,
        rt=rt,
        params=p["pretrain_encoder"],
        **p["pretrain_encoder"],
    )


if __name__ == "__main__":
    main()
