"""Files as they are published (SIIM DICOMs and RLE masks, CXR-14 PNGs and labels) and
the files the stages hand each other (prepared arrays, per-image results): readers and
writers, pure functions with no model code."""
