"""The verdict of an experiment arm against the default arm on the report's primary endpoint.

Reads both git revisions' per-image tables (`metrics/evaluate/<share>/<variant>-<run>/per_image.csv`,
git-tracked) with `git show`, and per share and variant that both hold, over the runs both hold,
estimates exp - base the report's way (core/study.py): runs paired by run id, the test images
resampled with the same stratified resamples for both arms, a seed-aware interval
(`bootstrap.seed_aware`). Holm's correction runs over every pretrained (share, variant) pair at
once (more conservative than the report's Holm within a share), each interval drawn at the level
its Holm p implies; the random `none` encoder is a check (a knob
that leaves it untouched gives exactly 0). The primary endpoint, the resamples and the seed are
the base revision's params.yaml (report.primary, report.resamples, seed).

    python tools/compare_arms.py HEAD encoder-lr-0.1              # an experiment name from `dvc exp run -n`
    python tools/compare_arms.py main 1a2b3c4 --json arms.json    # or any commit-ish
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import yaml

from pneumo.core import bootstrap, study
from pneumo.formats import per_image

TABLE = re.compile(r"metrics/evaluate/(?P<share>\d+)/(?P<variant>.+)-(?P<run>\d+)/per_image\.csv")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def resolve(repo: Path, rev: str) -> str:
    """The commit of `rev`: a commit-ish, or the name of a DVC experiment (refs/exps/../<name>)."""
    found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"],
                           capture_output=True, text=True)  # fmt: skip
    if found.returncode == 0:
        return found.stdout.strip()
    refs = [r for r in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split() if r.endswith(f"/{rev}")]
    if len(refs) != 1:
        raise SystemExit(f"{rev!r}: not a commit, and {len(refs)} DVC experiments of that name: {refs}")
    return git(repo, "rev-parse", refs[0]).strip()


def tables(repo: Path, commit: str) -> dict[tuple[int, str, int], per_image.Table]:
    """(share, variant, run) -> the per-image table that `commit` holds."""
    found = {}
    for path in git(repo, "ls-tree", "-r", "--name-only", commit, "metrics/evaluate").split("\n"):
        if m := TABLE.fullmatch(path):
            text = git(repo, "show", f"{commit}:{path}")
            found[int(m["share"]), m["variant"], int(m["run"])] = per_image.from_text(text, f"{commit[:8]}:{path}")
    return found


def compare(base: dict, exp: dict, *, primary: str, resamples: int, seed: int) -> list[dict]:
    """One row per (share, variant) in both arms: each arm's run mean and the paired exp - base,
    called under Holm over the pretrained variants (`none`: a check, outside the family)."""
    keys = sorted(base.keys() & exp.keys(), key=lambda k: (-k[0], k[1] == study.REFERENCE, k[1], k[2]))
    if not keys:
        raise SystemExit("no per-image table of the same share, variant and run in both revisions")
    runs = {(s, v): [r for s2, v2, r in keys if (s2, v2) == (s, v)] for s, v, _ in keys}
    study.check_same_images({f"base {k}": base[k] for k in keys} | {f"exp {k}": exp[k] for k in keys})
    counts = bootstrap.stratified_counts(base[keys[0]]["has_pneumothorax"], resamples, seed)
    scored, estimates = {}, {}
    for (s, v), ids in runs.items():
        scored[s, v] = [study.scored_runs([arm[s, v, r] for r in ids], counts)[primary] for arm in (base, exp)]
        estimates[s, v] = bootstrap.seed_aware(*study.minus(scored[s, v][1], scored[s, v][0]))
    family = {k: e for k, e in estimates.items() if k[1] != study.REFERENCE and len(runs[k]) > 1}
    adjusted = study.holm_adjusted(family, min((len(runs[k]) for k in family), default=0))
    rows = []
    for (s, v), e in estimates.items():
        n, (b, x) = len(runs[s, v]), scored[s, v]
        if (s, v) in family:
            row = study.called_difference(e, adjusted[s, v], f"Holm over {len(family)}", n)
        else:  # `none`, a check: unadjusted; a pretrained variant with one run: nothing is called
            row = study.called_difference(e, e.p, "check" if v == study.REFERENCE else "one run", n)
            row["adjusted_p"] = None
        if v == study.REFERENCE and np.array_equal(b[0], x[0]) and np.array_equal(b[1], x[1]):
            row["verdict"] = "identical"
        means = [study.number(bootstrap.seed_aware(*arm).value) for arm in (b, x)]
        rows.append({"share": s, "variant": v, "runs": runs[s, v], "base": means[0], "exp": means[1], **row})
    return rows


def markdown(rows: list[dict], primary: str) -> str:
    def f(x, digits=4):
        return "-" if x is None else f"{x:.{digits}f}"

    lines = [
        f"| share | variant | runs | base {primary} | exp {primary} | exp - base [interval] | p | Holm p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = f"{f(r['diff'])} [{f(r['low'])}, {f(r['high'])}]"
        lines.append(
            f"| {r['share']}% | {r['variant']} | {len(r['runs'])} | {f(r['base'])} | {f(r['exp'])} | {diff} "
            f"| {f(r['p'], 3)} | {f(r['adjusted_p'], 3)} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the default arm: a commit-ish (HEAD, main)")
    parser.add_argument("exp", help="the experiment arm: a commit-ish or a `dvc exp run -n` name")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: here)")
    args = parser.parse_args(argv)
    base, exp = resolve(args.repo, args.base), resolve(args.repo, args.exp)
    p = yaml.safe_load(git(args.repo, "show", f"{base}:params.yaml"))
    settings = {"primary": p["report"]["primary"], "resamples": p["report"]["resamples"], "seed": p["seed"]}
    rows = compare(tables(args.repo, base), tables(args.repo, exp), **settings)
    print(f"{args.exp} ({exp[:8]}) minus {args.base} ({base[:8]}), {settings['primary']}:\n")
    print(markdown(rows, settings["primary"]))
    if args.json:
        args.json.write_text(json.dumps({"base": base, "exp": exp, **settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
