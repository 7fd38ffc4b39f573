"""Exact whole-image inference that never holds a full-resolution map.

- :mod:`.bands`: maps computed in bands of rows, with the whole map's values;
- :mod:`.backbone`: UFO-ViT's tokens in bands (two passes per block);
- :mod:`.heads`: mmseg's UPerHead, FPNHead and FPN neck as band graphs;
- :mod:`.inputs`: what a streamed prediction is given: its options
  (:class:`.inputs.StreamConfig`, one reading of ``test_cfg`` for every
  model) and the rows of its image;
- :mod:`.predict`: labels of every pixel (:func:`segment_large` for an image
  in memory), and the segmentor test mode ``'stream'`` in :mod:`.segmentor`
  (registered in mmseg as ``StreamingEncoderDecoder``);
- :mod:`.detector`: mmdet's Mask R-CNN with the test mode ``'stream'``
  (``StreamingMaskRCNN``, :func:`.detector.detect_large`).

docs/large_images.md has the how and the measurements.
"""
from .backbone import StreamedUFOViT
from .predict import segment_large

__all__ = ['StreamedUFOViT', 'segment_large']
