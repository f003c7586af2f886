"""`dvc plots show` / `dvc plots diff` draw their curves without network: the project's HTML
template (committed; written by tools/plots_template.py from the vega bundle vl-convert-python
ships) carries the chart libraries inline. Checked in headless Chromium with DNS blocked, against
DVC's own CDN page, which draws nothing there."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

TEMPLATE = Path(".dvc") / "offline_plots.html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_template_is_configured_and_inlines_the_chart_libraries(root):
    template = root / TEMPLATE
    assert template.is_file(), f"{template} missing: python tools/plots_template.py {TEMPLATE}"
    page = template.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN tags are never inserted
    assert not re.search(r"<script[^>]*\ssrc=", page) and "cdn.jsdelivr" not in page
    for library in ("vega", "vega-lite", "vega-embed"):
        assert re.search(rf"\b{library}@\d+\.\d+", page), f"{library} is not named in the template"
    for name in ("vegaEmbed", "vega", "vegaLite"):  # the globals DVC's chart divs call
        assert f"window.{name}=" in page
    config = (root / ".dvc" / "config").read_text()
    assert f"html_template = {TEMPLATE.name}" in config  # relative to .dvc/


def test_committed_template_is_what_the_pinned_bundle_writes(root, tmp_path):
    # the page is committed (a `pip install -e .` runs no code to write it): it must not go stale
    written = tmp_path / "offline_plots.html"
    subprocess.run([sys.executable, str(root / "tools" / "plots_template.py"), str(written)], check=True)
    assert written.read_bytes() == (root / TEMPLATE).read_bytes(), (
        f"{TEMPLATE} differs from what the installed vl-convert-python bundles: "
        f"python tools/plots_template.py {TEMPLATE}, then commit it"
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", str(TEMPLATE)], cwd=root)
    assert ignored.returncode == 1, f"{TEMPLATE} is ignored by git, so a clone would lack it"


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
