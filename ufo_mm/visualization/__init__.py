"""Pictures of predictions (``seg_pictures``: image | ground truth | prediction).
Import the submodules; this package imports nothing itself."""
