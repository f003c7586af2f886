"""Set-up step (run by `make`): an HTML template for `dvc plots show` / `dvc plots diff` with
the chart library inlined, so every curve draws on a machine without network.

DVC's own page loads vega, vega-lite and vega-embed from a CDN at view time; offline (most GPU
clusters, these machines) each chart is then blank, without an error. This fetches those
same versions once from the npm registry (a package registry, at set-up, never at run time),
checks each tarball against its published sha512, and writes a template that carries them
inline. The template has no `{scripts}` placeholder, so DVC's CDN tags are never inserted;
`.dvc/config` points `plots.html_template` at the file this writes.

    python tools/plots_template.py .dvc/plots/offline.html
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

# the versions dvc-render's page loads (dvc_render/vega.py), with npm's published integrity
PACKAGES = {  # name: (version, sha512 integrity)
    "vega": ("5.20.2", "qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    "vega-lite": ("5.2.0", "Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    "vega-embed": (
        "6.18.2",
        "wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
}
REGISTRY = "https://registry.npmjs.org"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline: vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed} inlined)</title>
{scripts}
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(name: str, version: str, integrity: str) -> str:
    """The package's minified browser build, from its npm tarball checked against `integrity`."""
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        blob = response.read()
    digest = base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{url}: sha512 {digest} does not match the pinned integrity {integrity}")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.extractfile(f"package/build/{name}.min.js")
        if member is None:
            raise SystemExit(f"{url}: no package/build/{name}.min.js")
        return member.read().decode("utf8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="template to write (e.g. .dvc/plots/offline.html)")
    out = parser.parse_args().out
    blocks = []
    for name, (version, integrity) in PACKAGES.items():
        # "</script" inside a library would end the inline element early; escaped, it is inert in JS
        code = fetch(name, version, integrity).replace("</script", "<\\/script")
        blocks.append(f"    <script>/* {name}@{version} */\n{code}\n    </script>")
    scripts = "\n".join(blocks)
    versions = {name.replace("-", "_"): version for name, (version, _) in PACKAGES.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(PAGE.format(scripts="{scripts_inline}", **versions).replace("{scripts_inline}", scripts))
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): dvc plots draw offline")


if __name__ == "__main__":
    main()
