"""Raster files read and written band by band: ``ufo_mm.io.rasters``.

Import the submodule; this package imports nothing itself (and nothing here
imports torch).
"""
