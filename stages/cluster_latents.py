"""DVC stage `cluster_latents@<run>`: cluster one run's autoencoder latents (and, given `--ssl`,
the ssl encoder's embedding) of every prepared CXR-14 image (seeded by the run); write the
pseudo-labels of the latent chosen in params, and the two controls (the same ids shuffled;
raw-pixel clusters); validate every clustering against the true labels against chance (AMI with
a permutation p-value; NMI, ARI, purity) beside the raw-pixel baseline."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.cluster_latents import cluster_latents


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
    parser.add_argument("--model", type=Path, required=True, help="the run's autoencoder checkpoint")
    parser.add_argument(
        "--ssl", type=Path, help="the run's ssl encoder: its embedding is clustered too when train_ssl trained it"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for pseudo_labels.csv and the controls' CSVs")
    parser.add_argument("--metrics", type=Path, required=True, help="validation metrics JSON")
    parser.add_argument("--plots", type=Path, required=True, help="folder for the projection and label plots")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    runtime.seed_everything(args.seed)
    cluster_latents(
        images_dir=args.images,
        model_path=args.model,
        # by the params, not by what lies on disk: an earlier experiment's encoder may still be there
        ssl_path=args.ssl if "ssl" in p["train_ssl"]["initialisations"] else None,
        out_dir=args.out,
        metrics_path=args.metrics,
        plots_dir=args.plots,
        classes=p["prepare_cxr14"]["classes"],
        seed=args.seed,
        device=p["device"],
        **p["cluster_latents"],
    )


if __name__ == "__main__":
    main()
