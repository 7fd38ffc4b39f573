"""Evaluation beyond mmdet's/mmseg's test loops: one checkpoint at several
resolutions (``resolutions``), on images far larger than its training size
(``highres``), and the single-image metrics they use (``metrics``). Import the
submodules; this package imports nothing itself."""
