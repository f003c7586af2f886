"""The HTML template for `dvc plots show` / `dvc plots diff`, with the chart libraries inlined
so every curve draws on a machine without network.

DVC's own page loads vega, vega-lite and vega-embed from a CDN at view time; offline (most GPU
clusters, these machines) each chart is then blank, without an error. vl-convert-python (a
pinned dev dependency) ships the three libraries as one browser bundle; this writes a template
that carries it inline, after checking that its majors are those dvc-render's page loads. The
template has no `{scripts}` placeholder, so DVC's CDN tags are never inserted; `.dvc/config`
points `plots.html_template` at the file this writes.

The page is committed, so every clone draws offline however it was installed (`pip install -e .`
runs no project code); tests/test_plots.py fails when it differs from what this writes with the
pinned vl-convert-python. After changing that pin in pyproject.toml and constraints.txt:

    python tools/plots_template.py .dvc/offline_plots.html
"""

from __future__ import annotations

import argparse
import re
from importlib.metadata import version
from pathlib import Path

import vl_convert
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline: {libraries} inlined)</title>
    <script>/* {libraries}: the javascript_bundle of vl-convert-python {vl_convert} */
{{bundle}}
    </script>
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def dvc_render_majors() -> dict[str, int]:
    """Major version of each library dvc-render's own page loads from the CDN (vega, vega-lite, vega-embed)."""
    majors = {name: int(major) for name, major in re.findall(r"/(vega[a-z-]*)@(\d+)", VegaRenderer.SCRIPTS)}
    if set(majors) != {"vega", "vega-lite", "vega-embed"}:
        raise SystemExit(f"dvc-render's page loads {majors}, not vega, vega-lite and vega-embed: check its SCRIPTS")
    return majors


def page() -> str:
    """The template: vl-convert's bundle of the vega-lite, vega and vega-embed majors DVC's specs are written for."""
    want = dvc_render_majors()
    shipped = {"vega": vl_convert.get_vega_version(), "vega-embed": vl_convert.get_vega_embed_version()}
    lite = [v for v in vl_convert.get_vegalite_versions() if int(v.split(".")[0]) == want["vega-lite"]]
    if not lite or any(int(shipped[name].split(".")[0]) != want[name] for name in shipped):
        raise SystemExit(
            f"vl-convert-python {version('vl-convert-python')} ships vega {shipped['vega']}, vega-embed "
            f"{shipped['vega-embed']} and vega-lite {vl_convert.get_vegalite_versions()}; dvc-render's page "
            f"loads majors {want}: pin a vl-convert-python whose libraries have those majors"
        )
    shipped["vega-lite"] = max(lite, key=lambda v: tuple(map(int, v.split("."))))
    # the default snippet sets window.vega, window.vegaLite and window.vegaEmbed, which DVC's chart divs call
    bundle = vl_convert.javascript_bundle(vl_version=shipped["vega-lite"])
    # DVC fills the template with str.replace: a placeholder inside the library would be overwritten
    placeholders = (HTML.SCRIPTS_PLACEHOLDER, HTML.PLOTS_PLACEHOLDER, HTML.REFRESH_PLACEHOLDER)
    if any("{" + p + "}" in bundle for p in placeholders):
        raise SystemExit(f"the bundle contains one of DVC's placeholders {placeholders}")
    libraries = ", ".join(f"{name}@{shipped[name]}" for name in ("vega", "vega-lite", "vega-embed"))
    # "</script" inside the library would end the inline element early; escaped, it is inert in JS
    bundle = bundle.replace("</script", "<\\/script")
    # the bundle's braces must not go through str.format
    return PAGE.format(libraries=libraries, vl_convert=version("vl-convert-python")).replace("{bundle}", bundle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="template to write (.dvc/offline_plots.html)")
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(page())
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): dvc plots draw offline")


if __name__ == "__main__":
    main()
