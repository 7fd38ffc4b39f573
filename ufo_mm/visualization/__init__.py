"""Pictures of predictions: image | ground truth | prediction
(``seg_pictures``), a prediction drawn over an image of any size
(``overlays``), mmdet's / mmseg's own visualizers (``predictions``).
Import the submodules; this package imports nothing itself."""
