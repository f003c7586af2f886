"""`predict_test`: the SIIM submission for the test DICOMs, from the trained run with the best
validation SIIM Dice (never chosen on test scores), by the engine of `pneumo predict`
(`core.predict`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pneumo.core.predict import PredictError, predict

log = logging.getLogger(__name__)


def choose_run(evaluations: Path, variants: list[str], runs: list[int]) -> str:
    """The "<variant>-<run>" whose `evaluations/<variant>-<run>.json` has the best validation
    SIIM Dice (["val"]["siim_dice"]; on a tie the first, variants then runs in order). A missing
    or unreadable file is a ValueError naming it."""
    scores = {}
    for name in (f"{variant}-{run}" for variant in variants for run in runs):
        path = evaluations / f"{name}.json"
        try:
            scores[name] = json.loads(path.read_text())["val"]["siim_dice"]
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file (evaluate writes one per trained run)") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise ValueError(f"{path}: no validation SIIM Dice (['val']['siim_dice']) to read ({reason})") from None
    if not scores:
        raise ValueError("no run to choose from: the variants or the runs are empty")
    return max(scores, key=scores.__getitem__)


def predict_test(
    *,
    evaluations: Path,
    models: Path,
    variants: list[str],
    runs: list[int],
    input_dir: Path,
    out_dir: Path,
    batch_size: int,
    device: str,
    strict: bool,
) -> dict:
    """Predict every DICOM under `input_dir` with `models/<chosen run>` (`choose_run`): write
    `out_dir/submission.csv` (and the engine's .errors/.files/.duplicates CSVs beside it),
    overlays in `out_dir/overlays` and `out_dir/chosen_model.json`; return the model folder,
    the images predicted and the number of files not predicted. Raises ValueError (one line)
    when no run can be chosen, nothing can be or was predicted (a PredictError), or, when
    `strict`, some input was unreadable (after writing everything)."""
    chosen = choose_run(evaluations, variants, runs)
    log.info(f"best variant by validation SIIM Dice: {chosen}")
    model = str(models / chosen)
    try:
        done, errors = predict(
            model_dir=models / chosen,
            inputs=[input_dir],
            out_csv=out_dir / "submission.csv",
            overlays_dir=out_dir / "overlays",
            batch_size=batch_size,
            device=device,
        )
    except PredictError as e:
        raise PredictError(f"predict_test: {e}") from None
    if not done:  # the engine wrote nothing: a stage output of chosen_model.json alone would pass for one
        raise PredictError(f"predict_test: nothing predicted: all {len(errors)} test file(s) refused (see above)")
    (out_dir / "chosen_model.json").write_text(json.dumps({"model": model, "images": done}) + "\n")
    if errors and strict:
        raise ValueError(
            f"{len(errors)} unreadable test file(s) (data.strict=true); see {out_dir / 'submission.csv.errors.csv'}"
        )
    return {"model": model, "images": done, "errors": len(errors)}
