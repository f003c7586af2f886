"""The same bytes on every CPU: `synthesize`, `prepare_siim` and `prepare_cxr14` run in
subprocesses with the vector paths of OpenCV, numpy and libjpeg-turbo switched on and off,
and must write identical files. A CPU without AVX-512 (or AVX2) takes the paths switched
off here, so this is what a fresh clone elsewhere gets."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# numpy's runtime-dispatched targets present on this CPU (and not already switched off):
# disabling them all leaves its baseline
_NUMPY_DISPATCH = " ".join(
    name for name in np._core._multiarray_umath.__cpu_dispatch__ if np._core._multiarray_umath.__cpu_features__[name]
)
# added to what the environment already disables, so a run held to AVX2 stays held there
_NUMPY_OFF = " ".join(filter(None, [os.environ.get("NPY_DISABLE_CPU_FEATURES", ""), _NUMPY_DISPATCH]))
SWITCHES = {
    "opencv_off": ({}, True),
    "numpy_off": ({"NPY_DISABLE_CPU_FEATURES": _NUMPY_OFF}, False),
    "libjpeg_off": ({"JSIMD_FORCENONE": "1"}, False),
    "all_off": ({"NPY_DISABLE_CPU_FEATURES": _NUMPY_OFF, "JSIMD_FORCENONE": "1"}, True),
}

SYNTHESIZE = """
from pathlib import Path
from pneumo.tasks.synthesize import synthesize
synthesize(siim_dir=Path(out) / "siim", cxr14_dir=Path(out) / "cxr14", n_siim=24, n_test=2, n_cxr14=16, size=256,
           location_map=Path(location_map), positive_rate=0.5, log_area_mean=-3.9, log_area_std=1.09,
           regions_per_image=[0.766, 0.167, 0.042, 0.025], one_sided=0.7, shared_fraction=0.3, rgba_fraction=0.2,
           finding_rate=0.9,
           seed=3)
"""

PREPARE = """
from pathlib import Path
from pneumo.tasks.prepare_cxr14 import prepare_cxr14
from pneumo.tasks.prepare_siim import prepare_siim
for size in (64, 100):  # an integer and a fractional shrink factor of the 1024 px films
    prepare_siim(root=Path(realdata) / "siim", rle_csv="train-rle.csv", out_dir=Path(out) / f"siim{size}",
                 image_size=size, split={"train": 0.5, "test": 0.5}, seed=0, strict=True, workers=1)
    prepare_cxr14(root=Path(realdata) / "cxr14", labels_csv="Data_Entry_2017.csv", out_dir=Path(out) / f"cxr14{size}",
                  image_size=size, classes=["No Finding", "Pneumothorax"], max_images=0, split={"train": 1.0}, seed=0,
                  strict=False, workers=1, exclude_patients=set())
"""


def run(script: str, out: Path, switch: str | None, **values) -> dict[str, str]:
    """Run `script` in a fresh interpreter with one set of switches; sha256 of every file written."""
    env_extra, opencv_off = SWITCHES[switch] if switch else ({}, False)
    prelude = "import cv2; cv2.setUseOptimized(False); assert not cv2.useOptimized()\n" if opencv_off else ""
    assigns = "".join(f"{k} = {str(v)!r}\n" for k, v in {"out": out, **values}.items())
    subprocess.run(
        [sys.executable, "-c", prelude + assigns + script], check=True, env={**os.environ, **env_extra}, timeout=600
    )
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


DISPATCH_INFO = (
    "import json; from numpy.lib.introspect import opt_func_info; "
    "print(json.dumps(opt_func_info(func_name='^(exp|log|arctan2)$', signature='float64')))"
)


def _current_targets(env: dict[str, str]) -> dict[str, str]:
    """The target numpy dispatches each float64 transcendental to, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", DISPATCH_INFO], env=env, capture_output=True, text=True, check=True)
    return {f"{func}({sig})": d["current"] for func, sigs in json.loads(proc.stdout).items() for sig, d in sigs.items()}


def test_numpy_switch_is_honoured_and_changes_avx512_transcendentals():
    """Proof that the numpy switch takes effect, on every CPU: with it, numpy dispatches exp, log
    and atan2 to its baseline. And what the generator must avoid: where numpy runs them on
    AVX-512 kernels, the switch changes their last bits. On a CPU without AVX-512 (AVX2 only)
    numpy's float64 exp and log give the baseline's bits, so nothing is asserted about bits there."""
    if not _NUMPY_DISPATCH:
        pytest.skip("numpy dispatches no vector path on this CPU")
    on_env, off_env = os.environ, {**os.environ, "NPY_DISABLE_CPU_FEATURES": _NUMPY_OFF}
    on, off = _current_targets(on_env), _current_targets(off_env)
    assert len(on) == 3 and all(t.startswith("baseline") for t in off.values()), off
    if not any(t.startswith(("AVX512", "X86_V4")) for t in on.values()):
        return  # no AVX-512 kernel to switch off (AVX2 gives the baseline's bits for these)
    code = (
        "import numpy as np; x = np.random.default_rng(0).uniform(-2, 2, (2, 100_000)); "
        "print(np.exp(x).tobytes().hex()[-64:], np.log(abs(x)).sum(), np.arctan2(*x).sum())"
    )
    bits_on, bits_off = (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        for env in (on_env, off_env)
    )
    assert bits_on != bits_off, on


@pytest.mark.slow
def test_synthesize_writes_the_same_bytes_with_every_simd_path(root, tmp_path):
    location_map = root / "data" / "siim_location_map.csv"
    reference = run(SYNTHESIZE, tmp_path / "on", None, location_map=location_map)
    assert len(reference) == 24 + 2 + 16 + 3
    for switch in SWITCHES:
        assert run(SYNTHESIZE, tmp_path / switch, switch, location_map=location_map) == reference, switch


@pytest.mark.slow
def test_prepare_stages_write_the_same_bytes_with_every_simd_path(realdata, tmp_path):
    reference = run(PREPARE, tmp_path / "on", None, realdata=realdata)
    assert sum(name.endswith("images.npy") for name in reference) == 4
    counts = json.loads((tmp_path / "on" / "siim64" / "report.json").read_text())
    assert counts["images"] == 10 and counts["positive"] == 5
    for switch in SWITCHES:
        assert run(PREPARE, tmp_path / switch, switch, realdata=realdata) == reference, switch
