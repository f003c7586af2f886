"""DVC stage `report`: the ablation table with seed-aware 95% intervals (runs, then test
images) as metrics/ablation.json and metrics/ablation.md: per share of the training films,
variants x metrics beside the content-free baselines, the confirmatory contrast with its
power, each other variant against `none` on the primary endpoint with Holm's correction,
the transfer gaps between shares, the secondary differences, the per-run table with how each U-Net's
training ended, the pseudo-labels against chance and the linear probe of every encoder; and
the headline numbers (the only DVC metrics file) as metrics/headline.json."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import initialisations
from pneumo.progress import log_to_stderr
from pneumo.tasks.report import report

BASELINES = ("all_empty", "location_prior")  # content-free: they never see an image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--results", type=Path, required=True, help="folder of evaluate's <share>/<variant>-<run>/ folders"
    )
    parser.add_argument("--baselines", type=Path, required=True, help="folder of the baselines' <name>/ folders")
    parser.add_argument(
        "--training", type=Path, required=True, help="folder of train_unet's <share>/<variant>-<run>/ folders"
    )
    parser.add_argument("--pseudo-labels", type=Path, required=True, help="folder of cluster_latents' <run>.json")
    parser.add_argument("--autoencoders", type=Path, required=True, help="folder of train_autoencoder's <run>/ folders")
    parser.add_argument(
        "--ssl", type=Path, help="folder of train_ssl's <run>/ folders (read when train_ssl.initialisations has ssl)"
    )
    parser.add_argument("--linear-probe", type=Path, required=True, help="linear_probe's JSON")
    parser.add_argument(
        "--pretraining", type=Path, required=True, help="folder of pretrain_encoder's <name>-<run>/ folders"
    )
    parser.add_argument("--json", type=Path, required=True, help="ablation JSON to write (every interval)")
    parser.add_argument("--md", type=Path, required=True, help="ablation Markdown report to write")
    parser.add_argument("--headline", type=Path, required=True, help="headline metrics JSON to write (DVC metrics)")
    parser.add_argument(
        "--charts", type=Path, required=True, help="folder for the review charts' data (dvc.yaml plots)"
    )
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    run_ids, variants, shares = p["runs"], p["train_unet"]["variants"], p["train_unet"]["shares"]
    # ssl is an experiment (train_ssl.initialisations): its rows by the params, never by what lies on disk
    ssl_trained = args.ssl is not None and "ssl" in p["train_ssl"]["initialisations"]
    # only the runs and shares the current params define (a removed run's old folder is not read)
    report(
        runs={
            s: {v: [args.results / str(s) / f"{v}-{r}" / "per_image.csv" for r in run_ids] for v in variants}
            for s in shares
        },
        baselines={name: args.baselines / name / "per_image.csv" for name in BASELINES},
        training={
            s: {v: [args.training / str(s) / f"{v}-{r}" / "metrics.json" for r in run_ids] for v in variants}
            for s in shares
        },
        clustering=[args.pseudo_labels / f"{r}.json" for r in run_ids],
        upstream={
            **{f"train_autoencoder@{r}": args.autoencoders / str(r) / "metrics.json" for r in run_ids},
            **{f"train_ssl@ssl-{r}": args.ssl / str(r) / "metrics.json" for r in run_ids if ssl_trained},
            **{
                f"pretrain_encoder@{v}-{r}": args.pretraining / f"{v}-{r}" / "metrics.json"
                for v in variants
                if initialisations.get(v).pretraining
                for r in run_ids
            },
        },
        run_ids=run_ids,
        primary=p["report"]["primary"],
        confirmatory=p["report"]["confirmatory"],
        effect_of_interest=p["report"]["effect_of_interest"],
        resamples=p["report"]["resamples"],
        seed=p["seed"],
        json_path=args.json,
        md_path=args.md,
        headline_path=args.headline,
        charts_dir=args.charts,
        linear_probe=args.linear_probe,
    )


if __name__ == "__main__":
    main()
