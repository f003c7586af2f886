"""`dvc plots show` / `dvc plots diff` draw their curves without network: the project's HTML
template (written by `make` from npm's vega packages, tools/plots_template.py) carries the
chart library inline. Checked in headless Chromium with DNS blocked, against DVC's own CDN
page, which draws nothing there."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

TEMPLATE = Path(".dvc") / "plots" / "offline.html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_template_is_configured_and_inlines_the_chart_library(root):
    template = root / TEMPLATE
    assert template.is_file(), f"{template} missing: `make` writes it (python tools/plots_template.py {TEMPLATE})"
    page = template.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN tags are never inserted
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    for library in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"/* {library} */" in page
    config = (root / ".dvc" / "config").read_text()
    assert "html_template = plots/offline.html" in config


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=cwd, check=True)


def coloured_pixels(png: Path) -> int:
    """Pixels of a saturated colour (the curves; text, axes and grid lines are grey)."""
    image = cv2.imread(str(png)).astype(int)
    spread = image.max(axis=2) - image.min(axis=2)
    return int((spread > 80).sum())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless check needs Chromium: apt-get install chromium")
def test_plots_diff_draws_curves_offline_where_the_cdn_page_is_blank(root, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "curve.tsv").write_text("step\tdice\n" + "".join(f"{i}\t{i / 10:.2f}\n" for i in range(8)))
    (repo / "dvc.yaml").write_text("plots:\n  - curve.tsv: {x: step, y: dice, template: simple}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "curve")
    (repo / "curve.tsv").write_text("step\tdice\n" + "".join(f"{i}\t{i / 12:.2f}\n" for i in range(8)))

    def render(template: Path | None, name: str) -> int:
        cmd = [sys.executable, "-m", "dvc", "plots", "diff", "HEAD", "-o", name]
        cmd += ["--html-template", str(template)] if template else []
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
        page = repo / name / "index.html"
        shot = repo / f"{name}.png"
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=10000", f"--screenshot={shot}", "--window-size=900,700", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        return coloured_pixels(shot)

    drawn = render(root / TEMPLATE, "offline")
    blank = render(None, "cdn")  # DVC's page: vega from a CDN, unreachable here
    assert drawn > 500, f"{drawn} coloured pixels: the two revisions' curves were not drawn"
    assert blank < 50, f"{blank} coloured pixels on the CDN page with DNS blocked"
