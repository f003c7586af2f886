"""The ablation report as Markdown (metrics/ablation.md) from the study's summary
(`study.ablation`, with what the report stage adds beside it: the training films per share,
the training that made the encoders, the linear probe). Its fixed text is the template
`ablation_report.md` beside this module: named blocks, each a string.Template with a `$name`
wherever a value goes. This module picks the blocks a summary needs, formats the numbers,
builds the tables and joins the blocks with one blank line."""

from __future__ import annotations

import functools
import re
from importlib import resources
from string import Template

from pneumo.core import bootstrap
from pneumo.core.study import METRICS, REFERENCE

TEMPLATE = "ablation_report.md"
BLOCK = re.compile(r"^<!-- (\w+) -->$", re.MULTILINE)  # the line that starts a block of the template
STUDY = {"none": 75.3, "labels": 80.0, "pseudo_labels": 76.8}  # the study's Dice (x100), for reference
CLUSTERING_METHODS = {  # bootstrap.from_runs: each run's own bootstrap SE, combined over the runs
    bootstrap.IMAGES_ONLY: "one run: its own image bootstrap only",
    bootstrap.T_RUNS_IMAGES: "t-based combination of the run spread and the runs' image-bootstrap SEs",
}
UPSTREAM = {  # the stages that made the encoders, as the Markdown names them (`<stage>@<run>` keys)
    "train_autoencoder": "autoencoders",
    "train_ssl": "ssl",
    "pretrain_encoder": "encoder pretraining",
}


@functools.cache
def blocks() -> dict[str, Template]:
    """The template's blocks by name (`ablation_report.md`, installed with the package: see
    pyproject.toml's package-data); text before the first block is a comment."""
    text = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    parts = BLOCK.split(text)[1:]
    return {name: Template(body.strip("\n")) for name, body in zip(parts[::2], parts[1::2], strict=True)}


def fill(name: str, **fields: object) -> str:
    """Block `name` with each `$field` replaced by `format(fields[field])`. Every field of
    the block must be given, and no other."""
    block = blocks()[name]
    names = set(block.get_identifiers())
    missing, unknown = sorted(names - fields.keys()), sorted(fields.keys() - names)
    if missing or unknown:
        raise ValueError(f"{TEMPLATE} block {name!r}: fields missing {missing}, fields not in the block {unknown}")
    return block.substitute({key: format(value) for key, value in fields.items()})


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _cell(d: dict, key: str = "value", signed: bool = False) -> str:
    return f"{_fmt(d[key], signed)} [{_fmt(d['low'], signed)}, {_fmt(d['high'], signed)}]"


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x >= 0.001 else "<0.001"


def _plateau(row: dict) -> str:
    if row["plateau_met"] is None:
        return "⚠ not recorded"
    return "met" if row["plateau_met"] else "⚠ still improving"


def _verdict_cell(row: dict) -> str:
    return f"**{row['verdict']}**" if row["called"] else row["verdict"]


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the header, its rule, one line per row."""
    return "\n".join([_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)])


def _head(summary: dict) -> list[str]:
    """The scope, the pre-specified design, one run's warning, the interval method and how
    the primary follows the gate over all runs."""
    parts = [
        fill("title"),
        fill(
            "scope",
            holds_on=summary["holds_on"],
            test_images=summary["test_images"],
            test_positive=summary["test_positive"],
            runs=summary["runs"],
            run_ids=", ".join(str(r) for r in summary["run_ids"]),
            resamples=summary["resamples"],
        ),
        fill(
            "design",
            primary=summary["primary"],
            contrast=summary.get("confirmatory", {}).get("contrast", "n/a"),
            full_share=summary["full_share"],
        ),
    ]
    if summary["runs"] == 1:
        parts.append(fill("one_run"))
    parts.append(fill("intervals", method=bootstrap.METHODS[summary["method"]]))
    if summary.get("gate_r_all_runs") is not None:
        parts.append(fill("gate_all_runs", r=f"{summary['gate_r_all_runs']:+.2f}"))
    c = summary.get("confirmatory")
    if c:
        parts.append(
            fill(
                "confirmatory",
                contrast=c["contrast"],
                primary=summary["primary"],
                difference=_cell(c, "diff", True),
                p=_p(c["p"]),
                verdict=c["verdict"],
                df=summary["runs"] - 1,
                detectable=_fmt(c["smallest_detectable"]),
                upper=_fmt(c["detectable_upper"]),
                sd_runs=_fmt(c["sd_runs"]),
                image_se=_fmt(c["image_se"]),
                effect=f"{c['effect_of_interest']:.3f}",
                needed="more than 100" if c["runs_needed"] is None else c["runs_needed"],
            )
        )
    return parts


def _family(share: str, family: dict, summary: dict) -> list[str]:
    """One share's section: the main table, the verdicts on the primary endpoint, the
    secondary differences, the gate, the baselines check."""
    primary = summary["primary"]
    films = summary.get("training_films", {}).get(share)
    rows = []
    for name, row in family["variants"].items():
        study = f"{STUDY[name]:.1f}" if name in STUDY and share == str(summary["full_share"]) else ""
        rows.append([name, row["runs"], *(_cell(row[m]) for m in METRICS), study])
    rows += [
        [f"{name} (baseline)", "–", *(_cell(row[m]) for m in METRICS), ""] for name, row in summary["baselines"].items()
    ]
    header = ["model", "runs", *(f"{m} (primary)" if m == primary else m for m in METRICS), "study Dice"]
    parts = [fill("share", share=share, films=f" ({films} films)" if films else "", table=table(header, rows))]
    vs_none = family["vs_none"]
    if vs_none:
        secondary = [m for m in METRICS if m != primary]
        verdicts = [
            [name, _cell(row[primary], "diff", True), f"{row['same_sign_runs']} runs", _p(row[primary]["p"]),
             _p(row[primary]["adjusted_p"]), row[primary]["test"], _verdict_cell(row[primary])]
            for name, row in vs_none.items()
        ]  # fmt: skip
        header = ["variant", "difference [interval]", "same sign in", "p", "adjusted p", "tested", "verdict"]
        differences = [[name, *(_cell(row[m], "diff", True) for m in secondary)] for name, row in vs_none.items()]
        parts.append(
            fill(
                "vs_none",
                reference=REFERENCE,
                primary=primary,
                table=table(header, verdicts),
                secondary=table(["variant", *secondary], differences),
            )
        )
    gate, r = family["gate"], family["gate"]["r_primary"]
    parts.append(
        fill(
            "gate",
            test_positive=summary["test_positive"],
            emptied=", ".join(f"{v} {n:.1f}" for v, n in gate["emptied_positives"].items()),
            primary=primary,
            r="n/a" if r is None else f"{r:+.2f}",
            missed=", ".join(f"{v} {n:.1f}" for v, n in gate["missed_positives"].items()),
        )
    )
    if family["vs_baseline"]:
        checks = [[name, _cell(d, "diff", True), _p(d["p"]), _verdict_cell(d)]
                  for name, d in ((name, row[primary]) for name, row in family["vs_baseline"].items())]  # fmt: skip
        baseline = next(iter(family["vs_baseline"].values()))[primary]["baseline"]
        header = ["variant", "difference [95% interval]", "p", "verdict"]
        parts.append(fill("vs_baseline", primary=primary, baseline=baseline, table=table(header, checks)))
    return parts


def _gaps(summary: dict) -> list[str]:
    """One section per smaller share: each variant's transfer gap with its verdict."""
    header = ["variant", "difference [interval]", "p", "adjusted p", "verdict"]
    parts = []
    for share, gaps in (summary.get("gap_differences") or {}).items():
        rows = [[v, _cell(d, "diff", True), _p(d["p"]), _p(d["adjusted_p"]), _verdict_cell(d)] for v, d in gaps.items()]
        parts.append(
            fill(
                "gap",
                share=share,
                full_share=summary["full_share"],
                primary=summary["primary"],
                table=table(header, rows),
            )
        )
    return parts


def label_efficiency(summary: dict) -> tuple[list[dict], list[dict]]:
    """The label-efficiency charts' rows, one per share and variant, x the number of labelled
    training films: the primary endpoint with its seed-aware interval, and each variant's
    difference from `none` with its interval at the level its verdict was tested (Holm within
    the share; the confirmatory contrast with all the films alone). Both lists share the fields
    the `efficiency` template draws; a share without training summaries (no film count) has no
    place on the films axis and is left out."""
    primary, films = summary["primary"], summary.get("training_films") or {}  # none without training summaries
    scores, gaps = [], []
    for share in sorted(summary["shares"]):
        if str(share) not in films:
            continue
        family = summary["families"][str(share)]
        at = {"share": share, "films": films[str(share)]}
        for variant, row in family["variants"].items():
            e = row[primary]
            scores.append({"variant": variant, **at, "value": e["value"], "low": e["low"], "high": e["high"]})
        for variant, row in family["vs_none"].items():
            d = row[primary]
            if d["diff"] is not None:
                gaps.append({"variant": variant, **at, "value": d["diff"], "low": d["low"], "high": d["high"]})
                gaps[-1]["verdict"] = d["verdict"]
    return scores, gaps


def _efficiency(summary: dict) -> list[str]:
    """The label-efficiency table (with more than one share): per share, each variant's primary
    endpoint and each pretrained variant's difference from none with its verdict."""
    if len(summary["shares"]) < 2:
        return []
    scores, gaps = label_efficiency(summary)
    if not scores:
        return []
    variants = list(dict.fromkeys(r["variant"] for r in scores))
    pretrained = list(dict.fromkeys(r["variant"] for r in gaps))
    rows = []
    for share in sorted({r["share"] for r in scores}, reverse=True):
        at = {r["variant"]: r for r in scores if r["share"] == share}
        diff = {r["variant"]: r for r in gaps if r["share"] == share}
        cells = [f"{share}%", next(iter(at.values()))["films"], *(_cell(at[v]) for v in variants)]
        cells += [f"{_cell(diff[v], signed=True)} {diff[v]['verdict']}" if v in diff else "–" for v in pretrained]
        rows.append(cells)
    header = ["share", "films", *variants, *(f"{v} minus none" for v in pretrained)]
    return [fill("efficiency", primary=summary["primary"], table=table(header, rows))]


def _runs(summary: dict) -> list[str]:
    """The per-run table with how each U-Net's training ended, the runs still improving or
    not recorded, and the plateau of the training that made the encoders."""
    primary = summary["primary"]
    header = [
        "share", "variant", "run", primary, "siim_dice", "auc", "emptied", "selected epoch", "epochs run", "plateau",
        "change", "precision",
    ]  # fmt: skip
    rows = [
        [f"{share}%", name, row["run"], _fmt(row[primary]), _fmt(row["siim_dice"]), _fmt(row["auc"]),
         row["gate_emptied"], "n/a" if row["selected_epoch"] is None else row["selected_epoch"],
         "n/a" if row["epochs"] is None else row["epochs"], _plateau(row),
         "n/a" if row["change"] is None else f"{row['change']:.1%}", row["precision"] or "n/a"]
        for share, family in summary["per_run"].items()
        for name, family_rows in family.items()
        for row in family_rows
    ]  # fmt: skip
    flagged, unknown = summary["still_improving"], summary["plateau_not_recorded"]
    plateau = [fill("still_improving", runs=", ".join(flagged))] if flagged else []
    plateau += [fill("plateau_not_recorded", runs=", ".join(unknown))] if unknown else []
    parts = [fill("runs", table=table(header, rows), plateau="\n".join(plateau or [fill("every_run_met")]))]
    upstream = summary.get("upstream_training") or {}
    if upstream:
        open_runs = [
            f"{name} ({row['epochs']} epochs"
            + (f", still {row['change']:.1%} better)" if row["change"] is not None else ")")
            for name, row in upstream.items()
            if row["plateau_met"] is False
        ]
        stages = dict.fromkeys(UPSTREAM.get(name.split("@")[0], name.split("@")[0]) for name in upstream)
        plateau = fill("upstream_open", runs=", ".join(open_runs)) if open_runs else fill("upstream_met")
        parts.append(fill("upstream", count=len(upstream), stages=", ".join(stages), plateau=plateau))
    return parts


def _clustering(clustering: dict | None) -> list[str]:
    """The pseudo-labels against chance: per run and latent AMI with its interval and p, NMI
    beside its chance level; each latent's AMI minus raw pixels over the runs."""
    if not clustering:
        return []
    latents = clustering["latents"]
    header = ["run", *(h for n in latents for h in (f"AMI {n.replace('_', ' ')}", "p"))]
    header += [f"NMI {n.replace('_', ' ')} (chance)" for n in latents]
    rows = []
    for row in clustering["per_run"]:
        cells = [row["run"]]
        for name in latents:
            ami = {"value": row[f"ami_{name}"], "low": row[f"ami_low_{name}"], "high": row[f"ami_high_{name}"]}
            cells += [_cell(ami), _p(row[f"ami_p_{name}"])]
        cells += [f"{_fmt(row[f'nmi_{n}'])} ({_fmt(row[f'nmi_chance_{n}'])})" for n in latents]
        rows.append(cells)
    differences = [
        fill(
            "ami_difference",
            latent=name,
            runs=clustering["runs"],
            difference=_cell(d, "diff", True),
            method=CLUSTERING_METHODS[d["method"]],
            p=_p(d["p"]),
            adjusted_p=_p(d["adjusted_p"]),
            winner=d["winner"],
        )
        for name, d in clustering["ami_minus_raw_pixels"].items()
    ]
    return [
        fill(
            "clustering",
            pseudo_labels=clustering["pseudo_labels"],
            table=table(header, rows),
            differences="\n".join(differences),
        )
    ]


def _probe(probe: dict | None) -> list[str]:
    """The linear probe of every frozen encoder: layer4's macro and Pneumothorax AUC on the
    CXR-14 probe split, each minus none; every layer's macro AUC; SIIM's AUC per layer."""
    if not probe:
        return []
    rows = []
    for name, e in probe["encoders"].items():
        minus = e.get("minus_none") or {}
        cells = [name]
        for score in ("macro_auc", "pneumothorax_auc"):  # Pneumothorax: absent from a tiny probe split
            cells += [
                _cell(e[score]) if score in e else "–",
                _cell(minus[score], signed=True) if score in minus else "–",
            ]
        rows.append(cells)
    header = ["encoder", "macro AUC", "minus none", "Pneumothorax AUC", "minus none"]
    probed = table(header, rows)
    if probe.get("skipped"):
        probed = "\n".join([fill("not_probed", reason=probe["skipped"]), *(_row(r) for r in rows)])
    split = probe["split"]
    parts = [
        fill(
            "probe",
            features=probe["features"],
            probe=probe["probe"],
            fit_images=split["fit_images"],
            scored=split["scored"],
            scored_images=split["scored_images"],
            runs=len(probe["runs"]),
            method=probe.get("method", "–"),
            table=probed,
        )
    ]
    if probe.get("layers"):
        parts.append(fill("probe_layers", table=_by_layer(probe["layers"], "macro_auc")))
    siim = probe.get("siim")
    if siim:
        siim_table = (
            _by_layer(siim["encoders"], "auc") if siim["encoders"] else fill("not_probed", reason=siim["skipped"])
        )
        counts = {k: siim["split"][k] for k in ("fit_images", "scored_images", "scored_positives")}
        parts.append(fill("probe_siim", **counts, table=siim_table))
    return parts


def _by_layer(layers: dict[str, dict[str, dict]], score: str) -> str:
    """One row per encoder: `score` per layer, and its difference from none under it."""
    names = list(next(iter(layers.values())))
    rows = []
    for encoder, by_layer in layers.items():
        cells = [encoder]
        for layer in names:
            e = by_layer[layer]
            minus = e.get("minus_none", {}).get(score)
            cells.append(_cell(e[score]) + (f"<br>{_cell(minus, signed=True)}" if minus else ""))
        rows.append(cells)
    return table(["encoder", *names], rows)


def _epochs(d: dict | None, sign: str = "") -> str:
    """A number of epochs with its interval, to a tenth ("–" when there is none to show)."""
    if d is None:
        return "–"
    f = f"{{:{sign}.1f}}".format
    return f(d["value"]) if d["low"] is None else f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]"


def _convergence(convergence: dict | None) -> list[str]:
    """The convergence-speed table of every share (`study.convergence`), when the report has it."""
    if not convergence:
        return []
    rows = []
    for share, family in convergence.items():
        for variant, row in family.items():
            epochs, minus = _epochs(row["epochs"]), _epochs(row.get("minus_none"), "+")
            films = "n/a" if row.get("films_seen") is None else f"{row['films_seen']:,.0f}"
            runs = ", ".join(str(x) for x in row["per_run"])
            rows.append([f"{share}%", variant, epochs, films, minus, runs])
    header = ["share", "variant", "epochs to 95% of best [95%]", "films seen", "minus none [95%]", "per run"]
    return [fill("convergence", table=table(header, rows))]


def markdown(summary: dict) -> str:
    """The ablation report: the scope and the pre-specified design, the confirmatory contrast
    with its power, one section per share of the training films, the transfer gaps, the
    per-run table with the training facts, the pseudo-labels, the linear probe, the method and
    the metric definitions."""
    parts = _head(summary)
    for share, family in summary["families"].items():
        parts += _family(share, family, summary)
    parts += _gaps(summary) + _efficiency(summary) + _runs(summary) + _convergence(summary.get("convergence"))
    parts += _clustering(summary.get("clustering"))
    parts += _probe(summary.get("linear_probe")) + [fill("method")]
    return "\n\n".join(parts) + "\n"
