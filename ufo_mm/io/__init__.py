"""Files of images of any size and of their predictions: an image read whole
and a label PNG written (``ufo_mm.io.images``), rasters read and written band
by band (``ufo_mm.io.rasters``), detections as COCO-style JSON
(``ufo_mm.io.detections``).

Import the submodules; this package imports nothing itself (and nothing here
imports torch).
"""
