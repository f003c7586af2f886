"""Benchmark (not a test): the scale rehearsal. Runs the non-training stages on synthetic
datasets of growing size and records each stage's wall time and peak memory, so the
growth of both with the number of films can be fitted and extrapolated to the real
datasets (12,047 SIIM films, 112,120 CXR-14 films).

For every size N it works in a fresh folder (deleted afterwards unless --keep):
`synthesize` N SIIM films, N // 4 test DICOMs and N CXR-14 films at --file-size px (params
only: synthesize.n_siim, n_test, n_cxr14, size), then runs the stage scripts exactly as
dvc.yaml does, one process each: prepare_siim, prepare_cxr14, cluster_latents, evaluate,
baselines, report, predict_test, activation_maps. The models those stages read are
untrained but of the real architectures and sizes (a seeded ResNet34 autoencoder, U-Net
and encoder): inference costs the same whatever the weights. With --train the training
stages also run one epoch each at every size (their host memory).

Memory of a stage = its process and all its children (the prepare stages' decoding pool),
sampled every 20 ms from /proc: `peak_rss_mb` (all resident pages, the memory-mapped
arrays' included) and `peak_anon_mb` (anonymous pages only: what the process holds
beyond the files it maps; the figure that must not grow with N). (The kernel's own peak,
ru_maxrss, is no use here: it counts the benchmark's pages the child had before exec.)
One JSON line per stage and size, then one
per stage with the fitted growth (least squares over the sizes): seconds per film and
anonymous MB per 1,000 films.

Usage: python benchmarks/scale.py [--sizes 500 1000 2000] [--image-size 128] [--file-size 512]
       [--workers 2] [--work DIR] [--keep] [--train] > benchmarks/results/scale-cpu.jsonl
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import emit

from pneumo.core import models

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"


def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc (no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += parents.get(p, [])
    return found


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(resident, anonymous resident) kB summed over the processes."""
    rss = anon = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
        except OSError:
            continue
    return rss, anon


def run(stage: str, cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run one stage process; wall time and peak memory of its process tree."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as out:
        out.write(f"\n### {stage}: {' '.join(cmd)}\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak_rss = peak_anon = 0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, anon = memory_kb(descendants(proc.pid))
            peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{stage} failed ({proc.returncode}); log: {log}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss / 1024, 1),
        "peak_anon_mb": round(peak_anon / 1024, 1),
    }


def untrained_models(work: Path, seed: int) -> None:
    """The models the measured stages read: real architectures, seeded weights."""
    torch.manual_seed(seed)
    ae_args = {"in_channels": 1, "depth": 5, "width": 16, "latent": 128}
    models.save_checkpoint(
        work / "models/autoencoder/model.safetensors",
        models.build_autoencoder("resnet34", **ae_args),
        kind="autoencoder",
        arch="resnet34",
        model_args=ae_args,
    )
    unet = models.build_unet(1)
    models.save_checkpoint(work / "models/encoders/none.safetensors", unet.encoder, kind="encoder", encoder="resnet34")
    models.save_checkpoint(
        work / "models/unet/none-0/model.safetensors",
        unet,
        kind="unet",
        encoder=models.ENCODER,
        in_channels=1,
        image_size=int(yaml.safe_load((work / "params.yaml").read_text())["data"]["image_size"]),
        variant="none",
        best_epoch=0,
    )
    (work / "models/heads").mkdir(parents=True, exist_ok=True)


def stages(work: Path, py: str, train: bool) -> list[tuple[str, list[str]]]:
    s = str(STAGES)
    evaluate_out = ["--metrics", "metrics/evaluate/none-0.json", "--plots", "metrics/evaluate/none-0"]
    steps = [
        ("prepare_siim", [py, f"{s}/prepare_siim.py", "--root", "raw/siim", "--out", "data/prepared/siim",
                          "--metrics", "metrics/prepare_siim.json"]),
        ("prepare_cxr14", [py, f"{s}/prepare_cxr14.py", "--root", "raw/cxr14", "--siim-index",
                           "data/prepared/siim/index.csv", "--siim-root", "raw/siim", "--shipped-map",
                           str(ROOT / "data/siim-to-nih.csv"),
                           "--out", "data/prepared/cxr14", "--metrics", "metrics/prepare_cxr14.json"]),
    ]  # fmt: skip
    if train:
        steps += [
            ("train_autoencoder", [py, "-m", "pneumo.launch", "1", f"{s}/train_autoencoder.py", "--seed", "0",
                                   "--images", "data/prepared/cxr14", "--model", "trained/ae.safetensors", "--encoder",
                                   "trained/ae-encoder.safetensors", "--live", "trained/ae", "--checkpoint",
                                   "trained/ae.pt", "--reconstructions", "trained/ae.png"]),
            ("pretrain_encoder", [py, "-m", "pneumo.launch", "1", f"{s}/pretrain_encoder.py", "--target", "labels",
                                  "--seed", "0", "--images", "data/prepared/cxr14",
                                  "--labels", "data/prepared/cxr14/index.csv",
                                  "--pseudo-labels", "data/pseudo_labels.csv",
                                  "--out", "trained/labels.safetensors", "--head", "trained/head.safetensors",
                                  "--live", "trained/labels", "--checkpoint", "trained/labels.pt"]),
            ("train_unet", [py, "-m", "pneumo.launch", "1", f"{s}/train_unet.py", "--share", "100", "--variant", "none",
                            "--seed", "0",
                            "--encoder", "models/encoders/none.safetensors", "--siim", "data/prepared/siim", "--out",
                            "trained/unet.safetensors", "--live", "trained/unet", "--checkpoint", "trained/unet.pt"]),
        ]  # fmt: skip
    steps += [
        ("cluster_latents", [py, f"{s}/cluster_latents.py", "--seed", "0", "--images", "data/prepared/cxr14",
                             "--model", "models/autoencoder/model.safetensors", "--out", "data/pseudo_labels.csv",
                             "--metrics", "metrics/pseudo_labels/0.json", "--plots", "metrics/pseudo_labels/0"]),
        ("evaluate", [py, f"{s}/evaluate.py", "--model-dir", "models/unet/none-0", "--siim", "data/prepared/siim",
                      "--prepare-cxr14-metrics", "metrics/prepare_cxr14.json", *evaluate_out]),
        ("baselines", [py, f"{s}/baselines.py", "--siim", "data/prepared/siim", "--out", "metrics/baselines",
                       "--metrics", "metrics/baselines.json"]),
        ("report", [py, f"{s}/report.py", "--results", "metrics/evaluate", "--training", "metrics/train_unet",
                    "--baselines", "metrics/baselines", "--pseudo-labels", "metrics/pseudo_labels",
                    "--json", "metrics/ablation.json",
                    "--md", "metrics/ablation.md", "--headline", "metrics/headline.json"]),
        ("predict_test", [py, f"{s}/predict_test.py", "--input", "raw/siim/dicom-images-test", "--evaluations",
                          "metrics/evaluate", "--models", "models/unet", "--out", "data/submission"]),
        ("activation_maps", [py, f"{s}/activation_maps.py", "--variant", "none", "--model-dir", "models/unet/none-0",
                             "--encoder", "models/encoders/none.safetensors", "--head",
                             "models/heads/none.safetensors", "--siim", "data/prepared/siim", "--grid",
                             "metrics/activation_maps/none-0.png", "--metrics", "metrics/activation_maps/none-0.json"]),
    ]  # fmt: skip
    return steps


def params_for(n: int, args) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["synthesize"].update(n_siim=n, n_test=n // 4, n_cxr14=n, size=args.file_size)
    p["data"].update(siim_root="raw/siim", cxr14_root="raw/cxr14", image_size=args.image_size)
    p["predict_test"]["input_dir"] = "raw/siim/dicom-images-test"
    p["runs"] = [0]
    p["train_unet"].update(variants=["none"], max_epochs=1)
    p["train_autoencoder"]["max_epochs"] = p["pretrain_encoder"]["max_epochs"] = 1
    p["cluster_latents"]["in_memory_mb"] = args.in_memory_mb
    p["device"] = "cpu"
    return p


def fit(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope per film)."""
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(values, float), 1)
    return float(intercept), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000], help="SIIM = CXR-14 films")
    parser.add_argument("--image-size", type=int, default=128, help="data.image_size (prepared, working size)")
    parser.add_argument("--file-size", type=int, default=512, help="synthesize.size (the files' resolution)")
    parser.add_argument("--workers", type=int, default=2, help="PNEUMO_DECODE_WORKERS (decoding processes)")
    parser.add_argument("--in-memory-mb", type=float, default=0, help="cluster_latents.in_memory_mb (0: streamed)")
    parser.add_argument("--work", type=Path, default=None, help="parent folder of the work folders (default: a temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (tens of GB at real sizes)")
    parser.add_argument("--train", action="store_true", help="also one epoch of each training stage")
    args = parser.parse_args()
    os.environ["PNEUMO_DECODE_WORKERS"] = str(args.workers)  # the prepare stages below inherit it
    py = sys.executable
    parent = Path(tempfile.mkdtemp(prefix="pneumo-scale-", dir=args.work))
    results: dict[str, list[tuple[int, dict]]] = {}
    try:
        for n in args.sizes:
            work = parent / f"n{n}"
            work.mkdir()
            params = params_for(n, args)
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            log = work.parent / f"n{n}.log"
            synth = [
                py,
                f"{STAGES}/synthesize.py",
                "--siim",
                "raw/siim",
                "--cxr14",
                "raw/cxr14",
                "--location-map",
                str(ROOT / "data" / "siim_location_map.csv"),
            ]
            measured = [("synthesize", run("synthesize", synth, work, log))]
            raw_mb = sum(f.stat().st_size for f in (work / "raw").rglob("*") if f.is_file()) / 2**20
            untrained_models(work, params["seed"])
            for stage, cmd in stages(work, py, args.train):
                measured.append((stage, run(stage, cmd, work, log)))
            cluster_log = [line for line in log.read_text().splitlines() if "latents of" in line]
            for stage, figures in measured:
                extra = {"detail": cluster_log[-1].split(": ", 1)[-1]} if stage == "cluster_latents" else {}
                record = {"stage": stage, "films": n, **figures, **extra}
                emit(**record, image_size=args.image_size, file_size=args.file_size, raw_mb=round(raw_mb))
                results.setdefault(stage, []).append((n, figures))
            if not args.keep:
                shutil.rmtree(work)
        for stage, rows in results.items():
            sizes = [n for n, _ in rows]
            if len(sizes) < 2:
                continue
            t0, per_film = fit(sizes, [r["seconds"] for _, r in rows])
            m0, anon_slope = fit(sizes, [r["peak_anon_mb"] for _, r in rows])
            _, rss_slope = fit(sizes, [r["peak_rss_mb"] for _, r in rows])
            emit(
                stage=stage,
                fit="least squares over " + "/".join(map(str, sizes)) + " films",
                seconds_fixed=round(t0, 2),
                ms_per_film=round(1000 * per_film, 3),
                anon_mb_fixed=round(m0, 1),
                anon_mb_per_1000_films=round(1000 * anon_slope, 2),
                rss_mb_per_1000_films=round(1000 * rss_slope, 2),
            )
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
        else:
            print(json.dumps({"kept": str(parent)}), file=sys.stderr)


if __name__ == "__main__":
    main()
