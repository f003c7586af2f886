"""A predicted mask as a DICOM Segmentation (SEG), the object PACS viewers (OHIF), 3D Slicer,
highdicom and MONAI Deploy read beside the film it segments; written with highdicom.

One SEG per film: a BINARY segmentation at the film's own rows and columns, one frame, one
segment "Pneumothorax" (SNOMED CT 36118008, category Morphologically Abnormal Structure
49755003), derived from the film (it references the film's SOP Instance in the Referenced
Series and Derivation Image sequences, and joins the film's study and patient). The segment
names the algorithm that made it: `Algorithm`, built from the model card and checkpoint by
`pneumo.core.predictor`. A film without a finding gets a SEG too, with an empty frame: "looked,
found nothing" is then on record, unlike a film that was never predicted. The SEG carries no
Pixel Measures: a film has no Frame of Reference, so none is required, and the spacing is the
film's, whose pixels the SEG's are one for one.

highdicom copies the patient and study attributes from the film as they are. A film's own
value that its VR forbids (SIIM's Patient's Age `29`, where AS wants `029Y`) would make the SEG
fail `dciodvfy`, so such a copied value is emptied (allowed: they are type 2 or 3), and logged
at DEBUG. highdicom is imported inside the functions (the `interop` extra): the base package,
which `pneumo predict` runs without --masks, does not need it.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.multival import MultiValue

from pneumo.formats import dicom

log = logging.getLogger(__name__)

EXTRA = "interop"  # the pyproject extra that installs highdicom (and nibabel)
INSTALL = f"pip install 'pneumo[{EXTRA}]'"
SEGMENT_LABEL = "Pneumothorax"
# SNOMED CT, as pydicom's code dictionary spells them: codes.SCT.Pneumothorax and
# codes.SCT.MorphologicallyAbnormalStructure (DICOM CID 7150, the category of a lesion)
PNEUMOTHORAX = ("36118008", "SCT", "Pneumothorax")
CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
ALGORITHM_FAMILY = ("123110", "DCM", "Artificial Intelligence")
SERIES_NUMBER = 9900  # high, so a viewer lists the SEG series after the film's own
MANUFACTURER = "pneumo"


@dataclass(frozen=True)
class Algorithm:
    """What made a mask, as the SEG's Segmentation Algorithm Identification says it: a name
    and a version that together identify the model (weights and post-processing), and the
    parameters worth knowing when reading the mask."""

    name: str
    version: str
    parameters: dict[str, str] = field(default_factory=dict)
    description: str = "Research use only; not a medical device."


class SegWriter:
    """Writes the SEGs of one run: each source series gets one new SEG series (the SEGs of one
    study's films stay together), numbered within it."""

    def __init__(self, algorithm: Algorithm):
        import highdicom  # noqa: F401 - refused here, before any film, when the extra is missing

        self.algorithm = algorithm
        self._series: dict[str, tuple[str, int]] = {}  # source SeriesInstanceUID -> (SEG series UID, instances)

    def __call__(self, mask: np.ndarray, source: pydicom.Dataset) -> bytes:
        """The SEG of `mask` (bool rows x columns, the film's) on the film whose header is `source`."""
        from pydicom.uid import generate_uid

        key = str(source.get("SeriesInstanceUID", ""))
        series_uid, done = self._series.get(key, (generate_uid(), 0))
        data = segmentation(source, mask, self.algorithm, series_uid=series_uid, instance_number=done + 1)
        self._series[key] = (series_uid, done + 1)
        return data


def segmentation(
    source: pydicom.Dataset, mask: np.ndarray, algorithm: Algorithm, *, series_uid: str, instance_number: int = 1
) -> bytes:
    """The bytes of a binary SEG of `mask` (rows x columns of `source`, the film's header, pixel
    data not needed) in a new SOP Instance of the series `series_uid`. A ValueError when the
    mask does not match the film, or the film lacks the UIDs a SEG must reference."""
    import highdicom as hd
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    rows, columns = int(source.Rows), int(source.Columns)
    if mask.shape != (rows, columns):
        raise ValueError(f"mask is {mask.shape[0]} x {mask.shape[1]}, the film {rows} x {columns}")
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(source.get(keyword, "")).rstrip("\0 ")
        if not dicom.is_uid(value):
            raise ValueError(f"no SEG: the film's {keyword} {dicom.shown(value)} is no valid DICOM UID")
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=Code(*ALGORITHM_FAMILY),
        version=algorithm.version,
        source=MANUFACTURER,
        parameters=algorithm.parameters or None,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=Code(*CATEGORY),
        segmented_property_type=Code(*PNEUMOTHORAX),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
    )
    # no Pixel Measures: a film has no Frame of Reference, so its SEG needs none (PS3.3 C.7.6.16.2.1),
    # and highdicom would copy PixelSpacing alone, which its own reader then refuses without the
    # Slice Thickness a projection has not; the SEG lies on the film's pixels, which have the spacing
    film = pydicom.Dataset(source)  # a new top level: the caller's header keeps its elements
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        film.pop(keyword, None)
    with warnings.catch_warnings(record=True) as caught:  # highdicom doubts the film's own names: not ours to fix
        warnings.simplefilter("always")
        seg = hd.seg.Segmentation(
            source_images=[film],
            pixel_array=mask.astype(np.uint8)[None],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=algorithm.name[:64],
            software_versions=algorithm.version,
            device_serial_number=algorithm.version[:64],
            content_label="PNEUMOTHORAX",
            content_description=algorithm.description[:64],
            omit_empty_frames=False,  # an empty mask is one empty frame: a film without a finding
        )
    for w in caught:
        log.debug(dicom.one_line(f"{source.SOPInstanceUID}: SEG: {w.message}"))
    seg.SeriesDescription = f"{algorithm.name}: {SEGMENT_LABEL.lower()}"[:64]
    # General Image: type 2C for an image without patient position and orientation, as a film has
    seg.PatientOrientation = source.get("PatientOrientation", "")
    _empty_invalid_copies(seg, source)
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _empty_invalid_copies(seg: pydicom.Dataset, source: pydicom.Dataset) -> None:
    """Empty each top-level value the SEG copied from the film that its VR does not allow."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    for element in seg:
        if element.VR in ("SQ", "UI") or element.tag not in source or element.value != source[element.tag].value:
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        for value in values:
            if not isinstance(value, str):
                continue
            try:
                validate_value(element.VR, value, config.RAISE)
            except ValueError as e:
                log.debug(dicom.one_line(f"{source.SOPInstanceUID}: SEG: {element.keyword} emptied: {e}"))
                element.value = None
                break
