"""`pneumo.dicom`: the stable public name of the DICOM reader (re-exported from `pneumo.formats.dicom`)."""

from pneumo.formats.dicom import DicomError, Radiograph, read_dicom, read_image, read_image_id

__all__ = ["DicomError", "Radiograph", "read_dicom", "read_image", "read_image_id"]
