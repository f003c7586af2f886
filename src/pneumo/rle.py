"""`pneumo.rle`: the stable public name of the SIIM RLE functions (re-exported from `pneumo.formats.rle`)."""

from pneumo.formats.rle import EMPTY, RLEError, RLETable, decode, encode, read_csv, render, runs

__all__ = ["EMPTY", "RLEError", "RLETable", "decode", "encode", "read_csv", "render", "runs"]
