"""End-to-end: the real `dvc repro` of every stage with smoke params, on the embedded
synthetic data and then on the real samples in ../shared/realdata. Where `unshare -n` is
allowed (root on Linux), DVC runs in a network namespace with no network at all, so any
download or phone-home in the pipeline would fail the test."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # every test here runs `dvc repro` on a fresh clone: minutes

SMOKE = {
    "runs": [0, 1],  # two whole training chains: the report's seed-aware path
    "synthesize": {"n_siim": 40, "n_cxr14": 60, "size": 64},
    "data": {"image_size": 32},
    "train_autoencoder": {"max_epochs": 1, "batch_size": 16},
    "train_ssl": {"max_epochs": 1, "batch_size": 16},
    "pretrain_encoder": {"max_epochs": 1, "batch_size": 16},
    "train_unet": {"max_epochs": 2, "batch_size": 8},
    "cluster_latents": {"resamples": 200, "permutations": 199},
    "linear_probe": {"resamples": 200},
    "report": {"resamples": 200},
}


OFFLINE = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0 else []


def run(cmd: list[str], cwd: Path, **env_vars: str) -> str:
    return run_logged(cmd, cwd, **env_vars)[0]


def run_logged(cmd: list[str], cwd: Path, **env_vars: str) -> tuple[str, str]:
    """A command's stdout and stderr (where the stages log); it must succeed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env_vars}
    proc = subprocess.run([*OFFLINE, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout, proc.stderr


def set_params(repo: Path, overrides: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:  # a top-level value (runs)
            params[section] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_probe_films_untouched(repo: Path, run_ids: list[int]) -> None:
    """From the stage outputs: the CXR-14 films the linear probe scores are disjoint from every
    split an encoder trained or selected on, and from every clustering's films. Each training
    stage's summary names the splits it read with their film counts, taken from the index arrays
    it trained and validated on: a stage that also read the probe films records another count."""
    probe = json.loads((repo / "metrics" / "linear_probe.json").read_text())
    with open(repo / "data" / "prepared" / "cxr14" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = {r["image_id"] for r in rows if r["split"] == probe["split"]["scored"]}
    assert len(scored) == probe["split"]["scored_images"] > 0
    summaries = [p for stage in ("train_autoencoder", "train_ssl", "pretrain_encoder")
                 for p in (repo / "metrics" / stage).glob("*/metrics.json")]  # fmt: skip
    assert len(summaries) >= 3 * len(run_ids)  # the autoencoder and both pretrainings of every run
    for path in summaries:
        films = json.loads(path.read_text())["films"]
        assert probe["split"]["scored"] not in films, path
        assert films == {s: sum(r["split"] == s for r in rows) for s in films}, path
    for r in run_ids:
        for targets in ("pseudo_labels", "permuted_clusters", "raw_clusters"):
            with open(repo / "data" / "pseudo_labels" / str(r) / f"{targets}.csv", newline="") as f:
                clustered = {row["image_id"] for row in csv.DictReader(f)}
            assert clustered and not clustered & scored


@pytest.fixture(scope="module")
def repo(root, tmp_path_factory) -> Path:
    """A fresh copy of the project's files (what a clone would hold) as its own git repo."""
    dest = tmp_path_factory.mktemp("clone") / "pneumo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        outputs = name.startswith(("data/prepared", "data/synthetic", "models/", "metrics/"))
        if (root / name).is_file() and (not outputs or name.endswith("README.md")):  # the folders' notes stay
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    set_params(dest, SMOKE)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "clone"], dest)
    return dest


def test_default_pipeline_end_to_end(repo):
    out, log = run_logged(["dvc", "repro"], repo)
    # every training stage names where it runs; `auto` on a machine without a usable GPU says why
    assert re.search(r"runtime: cpu \(\d+ threads.*\), 1 process, (bf16 autocast|fp32)", log)
    assert "device auto: running on the CPU (" in log
    for stage in (
        "synthesize",
        "prepare_siim",
        "prepare_cxr14",
        "train_autoencoder@0",
        "train_autoencoder@1",
        "cluster_latents@1",
        "init_encoder@1",
        "pretrain_encoder@labels-0",
        "pretrain_encoder@pseudo_labels-1",
        "linear_probe",
        "train_unet@100-labels-1",
        "train_unet@25-pseudo_labels-0",
        "evaluate@25-none-0",
        "baselines",
        "report",
        "predict_test",
        "activation_maps@pseudo_labels",
    ):
        assert f"Running stage '{stage}'" in out
    table = (repo / "metrics" / "ablation.md").read_text()
    for variant in ("none", "labels", "pseudo_labels"):
        assert f"| {variant} | 2 |" in table.split("## 100% of the training films")[1].split("## 25%")[0]
        assert f"| {variant} | 2 |" in table.split("## 25% of the training films")[1]
    for baseline in ("all_empty", "location_prior"):
        assert f"| {baseline} (baseline) |" in table
    ablation = json.loads((repo / "metrics" / "ablation.json").read_text())
    assert ablation["primary"] == "dice_positive" and ablation["runs"] == 2 and ablation["shares"] == [100, 25]
    none = ablation["families"]["100"]["variants"]["none"]["dice_positive"]
    assert 0 <= none["low"] <= none["value"] <= none["high"] <= 1
    assert set(ablation["families"]["25"]["vs_none"]) == {"labels", "pseudo_labels"}
    assert ablation["confirmatory"]["contrast"] == "labels - none" and ablation["confirmatory"]["smallest_detectable"]
    assert set(ablation["gap_differences"]["25"]) == {"labels", "pseudo_labels"}
    for share in ("100", "25"):  # convergence speed, from the validation curves dvclive logged
        assert {v: len(row["per_run"]) for v, row in ablation["convergence"][share].items()} == {
            "none": 2, "labels": 2, "pseudo_labels": 2}  # fmt: skip
    assert {f"{s}-{v}-{row['run']}" for s, family in ablation["per_run"].items() for v, rows in family.items()
            for row in rows} == {f"{s}-{v}-{r}" for s in (100, 25) for v in ("none", "labels", "pseudo_labels")
                                 for r in (0, 1)}  # fmt: skip
    headline = json.loads((repo / "metrics" / "headline.json").read_text())
    names = ["none", "labels", "pseudo_labels", "all_empty", "location_prior", "none@25", "labels@25",
             "pseudo_labels@25", "confirmatory", "clustering", "linear_probe"]  # fmt: skip
    assert list(headline) == names
    assert headline["none"] == {
        "dice_positive": round(none["value"], 4),
        "ci": round((none["high"] - none["low"]) / 2, 4),
    }
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    assert list(shown[""]["data"]) == ["metrics/headline.json"]  # the one metrics file
    for r in (0, 1):
        pseudo = json.loads((repo / "metrics" / "pseudo_labels" / f"{r}.json").read_text())
        assert set(pseudo) >= {"autoencoder", "raw_pixels", "minus_raw_pixels"} and "ssl" not in pseudo  # an experiment
        for latent in ("autoencoder",):
            assert pseudo[latent]["ami_low"] <= pseudo[latent]["ami"] <= pseudo[latent]["ami_high"]
            assert 0 < pseudo[latent]["ami_p"] <= 1
        for targets in ("pseudo_labels", "permuted_clusters", "raw_clusters"):  # the controls' targets too
            assert (repo / "data" / "pseudo_labels" / str(r) / f"{targets}.csv").stat().st_size > 0
    probe = json.loads((repo / "metrics" / "linear_probe.json").read_text())
    assert list(probe["encoders"]) == ["none", "labels", "pseudo_labels", "autoencoder"]
    assert "Running stage 'train_ssl" not in out  # an experiment
    assert all(len(e["macro_auc"]["per_run"]) == 2 for e in probe["encoders"].values())
    assert "## Linear probe" in table
    assert_probe_films_untouched(repo, [0, 1])
    assert json.loads((repo / "metrics" / "prepare_cxr14.json").read_text())["excluded_leakage"] > 0
    card = (repo / "models" / "unet" / "100" / "labels-0" / "MODEL_CARD.md").read_text()
    assert "synthetic data" in card and "all empty" in card
    for picture in (
        "metrics/train_autoencoder/0/reconstructions.png",
        "metrics/pseudo_labels/1/projection.png",
        "metrics/evaluate/100/none-0/overlays.png",
    ):
        assert (repo / picture).stat().st_size > 0
    # nothing changed: a second repro does nothing and the workspace is clean
    assert "Running stage" not in run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo)
    # where a run is placed (GPU, worker counts) is the environment's, not a param: nothing reruns
    placed = {"CUDA_VISIBLE_DEVICES": "1", "PNEUMO_DECODE_WORKERS": "1", "PNEUMO_LOADER_WORKERS": "2"}
    assert "up to date" in run(["dvc", "status"], repo, **placed)
    assert "Running stage" not in run(["dvc", "repro"], repo, **placed)


@pytest.mark.skipif(not OFFLINE, reason="unshare -n is not permitted here: the pipeline ran with network")
def test_the_pipeline_namespace_has_no_network(repo):
    probe = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"
    proc = subprocess.run([*OFFLINE, sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode != 0 and "unreachable" in proc.stderr.lower()


def test_rerun_from_scratch_gives_bit_identical_metrics(repo):
    before = {
        p: p.read_bytes() for p in (repo / "metrics").rglob("*.json") if "labels" in str(p) or "autoencoder" in str(p)
    }
    trained = ("train_autoencoder@0", "pretrain_encoder@labels-0", "train_unet@25-labels-0")
    # train again from the start: forced, and no checkpoint reuse (PNEUMO_RESUME=0)
    out = run(["dvc", "repro", "--force", "--single-item", *trained], repo, PNEUMO_RESUME="0")
    for stage in trained:
        assert f"Running stage '{stage}'" in out
    # retrained models are byte-identical, so DVC has nothing to redo downstream
    out = run(["dvc", "repro", "evaluate@25-labels-0", "cluster_latents@0"], repo)
    assert "Running stage" not in out
    after = {p: p.read_bytes() for p in before}
    changed = [str(p.relative_to(repo)) for p in before if before[p] != after[p]]
    assert len(before) >= 6 and not changed


def test_the_ssl_experiment_trains_ssl_and_reads_it_everywhere(repo):
    """ssl is an experiment: with it in the params, its encoder is trained for every run, its
    embedding clustered and probed, and its plateau checked; back to the default, the same stages
    leave it out although its files are still on disk."""
    default = ["none", "labels", "pseudo_labels", "autoencoder"]
    probed = f"linear_probe.encoders=[{','.join([*default, 'ssl'])}]"
    out = run(["dvc", "exp", "run", "-S", "train_ssl.initialisations=[ssl]", "-S", probed], repo)
    for stage in ("train_ssl@ssl-0", "train_ssl@ssl-1", "cluster_latents@1", "linear_probe", "report"):
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'pretrain_encoder" not in out  # the autoencoder's pseudo-labels are the same bytes
    for r in (0, 1):
        pseudo = json.loads((repo / "metrics" / "pseudo_labels" / f"{r}.json").read_text())
        assert pseudo["ssl"]["ami_low"] <= pseudo["ssl"]["ami"] <= pseudo["ssl"]["ami_high"]
        assert (repo / "models" / "ssl" / f"{r}.safetensors").read_bytes() == (
            repo / "models" / "encoders" / f"ssl-{r}.safetensors"
        ).read_bytes()
    assert "ssl" in json.loads((repo / "metrics" / "linear_probe.json").read_text())["encoders"]
    assert_probe_films_untouched(repo, [0, 1])  # ssl's summaries too
    upstream = json.loads((repo / "metrics" / "ablation.json").read_text())["upstream_training"]
    assert {"train_ssl@ssl-0", "train_ssl@ssl-1"} <= set(upstream)
    set_params(repo, {"train_ssl": {"initialisations": []}, "linear_probe": {"encoders": default}})
    out = run(["dvc", "repro"], repo)  # the ssl files are still there: the stages go by the params
    assert "Running stage 'train_ssl" not in out
    assert "ssl" not in json.loads((repo / "metrics" / "pseudo_labels" / "0.json").read_text())
    upstream = json.loads((repo / "metrics" / "ablation.json").read_text())["upstream_training"]
    assert not {"train_ssl@ssl-0", "train_ssl@ssl-1"} & set(upstream)
    # deleted, as docs/pipeline.md asks: the hashed folders are the default's again
    for stale in [*(repo / "models" / "ssl").glob("*.safetensors"), *(repo / "models" / "encoders").glob("ssl-*")]:
        stale.unlink()
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo)
    assert "ssl" not in json.loads((repo / "metrics" / "pseudo_labels" / "0.json").read_text())


def test_the_label_efficiency_experiment_draws_its_curve(repo, tmp_path):
    """The label-efficiency experiment by its documented command (docs/experiments.md), here with
    one share added at smoke size: only the new share trains, the report's table and both charts
    have every share, and `dvc plots show` draws them offline; then back to the default."""
    out = run(["dvc", "exp", "run", "-n", "label-efficiency", "-S", "train_unet.shares=[100,25,10]"], repo)
    assert "Running stage 'train_unet@10-labels-1'" in out and "Running stage 'train_unet@25" not in out
    variants = ("none", "labels", "pseudo_labels")
    rows = json.loads((repo / "metrics" / "charts" / "label_efficiency.json").read_text())
    assert {(r["share"], r["variant"]) for r in rows} == {(s, v) for s in (100, 25, 10) for v in variants}
    assert all(r["low"] <= r["value"] <= r["high"] for r in rows)
    films = {r["share"]: r["films"] for r in rows}
    assert 0 < films[10] < films[25] < films[100]
    gaps = json.loads((repo / "metrics" / "charts" / "label_efficiency_gap.json").read_text())
    assert {(r["share"], r["variant"]) for r in gaps} == {(s, v) for s in (100, 25, 10) for v in variants}
    assert all(r["value"] == r["low"] == r["high"] == 0 for r in gaps if r["variant"] == "none")  # the reference
    assert "| 10% |" in (repo / "metrics" / "ablation.md").read_text().split("## Label efficiency")[1]
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    page = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\s*vegaEmbed\(", page, re.S)]
    drawn = [s for s in specs if s.get("encoding", {}).get("x", {}).get("field") == "films"]  # the efficiency template
    assert len(drawn) == 2 and all(s["encoding"]["x"]["scale"]["type"] == "log" for s in drawn)
    assert [len(s["data"]["values"]) for s in drawn] == [9, 9]  # every share and variant; the gaps and none's 0
    set_params(repo, {"train_unet": {"shares": [100, 25]}})
    # the new share's files, deleted as docs/pipeline.md asks: the hashed folders are the default's again
    stale = [repo / folder / "10" for folder in ("models/unet", "metrics/evaluate", "metrics/train_unet")]
    for path in [*stale, *(repo / "models" / "checkpoints").glob("train_unet-10-*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo)


def test_same_pipeline_on_the_real_samples(repo, realdata):
    set_params(
        repo,
        {
            "runs": [0],  # the readers on real files are the point here; one chain keeps the suite short
            "train_unet": {"shares": [100]},  # and all the films: the share axis is tested above
            "data": {"siim_root": str(realdata / "siim"), "cxr14_root": str(realdata / "cxr14")},
        },
    )
    # run 1's models are no stage's output any more: remove them, as a user dropping a run would, since
    # stages that read whole model folders (predict_test, compare_variants, activation maps, linear_probe) hash them
    stale_files = [*(repo / "models" / "heads").glob("*-1.*"), *(repo / "models" / "encoders").glob("*-1.*")]
    for stale in [*(repo / "models" / "unet").glob("*/*-1"), *stale_files]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    out = run(["dvc", "repro"], repo)
    assert "Running stage 'report'" in out and "Running stage 'synthesize'" not in out
    counts = json.loads((repo / "metrics" / "prepare_siim.json").read_text())
    assert counts["images"] == 10 and counts["positive"] == 5
    leakage = json.loads((repo / "metrics" / "prepare_cxr14.json").read_text())
    assert leakage["images"] == 40  # the map inside the SIIM root was found without a param
    assert (leakage["siim_images"], leakage["siim_matched"]) == (10, 10)
    card = (repo / "models" / "unet" / "100" / "none-0" / "MODEL_CARD.md").read_text()
    assert "synthetic data" not in card


def test_share_models_and_experiments_through_a_remote(repo, tmp_path):
    """A teammate gets trained models without training: `dvc push` to a local-directory
    remote, a second clone `dvc pull`s and runs `pneumo predict`; an experiment travels with
    `dvc exp push` / `dvc exp pull` through the same git and DVC remotes."""
    origin, storage, teammate = tmp_path / "origin.git", tmp_path / "dvc-storage", tmp_path / "teammate"
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    run(["dvc", "remote", "add", "-d", "shared", str(storage)], repo)
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-qm", "results"], repo)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    run(["git", "push", "-q", "origin", "HEAD:main"], repo)
    run(["dvc", "push"], repo)
    run(["dvc", "exp", "run", "-n", "fewer-resamples", "-S", "report.resamples=100"], repo)
    run(["dvc", "exp", "push", "origin", "fewer-resamples"], repo)

    run(["git", "clone", "-q", "-b", "main", str(origin), str(teammate)], tmp_path)
    assert not (teammate / "models" / "unet" / "100" / "none-0" / "model.safetensors").exists()
    run(["dvc", "pull"], teammate)
    assert "up to date" in run(["dvc", "status"], teammate)  # nothing to retrain
    tests = teammate / "data" / "synthetic" / "siim" / "dicom-images-test"
    run(["pneumo", "predict", "--model", "models/unet/100/none-0", str(tests), "--out", "submission.csv"], teammate)
    rows = (teammate / "submission.csv").read_text().splitlines()
    assert rows[0] == "ImageId,EncodedPixels" and len(rows) - 1 == len(list(tests.rglob("*.dcm")))

    run(["dvc", "exp", "pull", "origin", "fewer-resamples"], teammate)
    assert "fewer-resamples" in run(["dvc", "exp", "list", "--all-commits"], teammate)
    run(["dvc", "exp", "apply", "fewer-resamples"], teammate)
    assert json.loads((teammate / "metrics" / "ablation.json").read_text())["resamples"] == 100
