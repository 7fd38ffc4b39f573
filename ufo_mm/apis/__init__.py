"""Entry points over mmengine/mmdet/mmseg: the runner of tools/train.py and
tools/test.py (``runner``), an image file of any size segmented into a label
file and an overlay (``file_segmentation``), the tools' progress bar
(``progress``).

Import the submodules; this package imports nothing itself, so that
``import ufo_mm`` stays light. A model from its config: :mod:`ufo_mm.builder`.
"""
