"""``StreamingEncoderDecoder``: mmseg's ``EncoderDecoder`` with one more test
mode, ``test_cfg=dict(mode='stream')``: whole-image inference computed in
bands (:mod:`.predict`), the same labels as mode 'whole' at any size that
fits the label map. mmseg's own ``tools/test.py`` evaluates with it::

    model = dict(type='StreamingEncoderDecoder',
                 test_cfg=dict(mode='stream', band_rows=None, tokens_per_band=None,
                               return_logits=False, token_device='auto',
                               max_ram_gb=None, scratch_dir=None))

Other modes ('whole', 'slide') and training are mmseg's, unchanged; the
state dict is EncoderDecoder's, so its checkpoints load either way.
``token_dtype='bf16'`` stores the backbone's token tensors in half the
memory (close to, not equal to, the float32 result). ``max_ram_gb`` is a
memory budget: the token tensors go to files in ``scratch_dir`` (default:
the system's temporary folder) when they do not fit it, with the same labels;
the batch and the label map are held whole in this mode whatever the budget. ``return_logits=True``
also keeps the full-size ``seg_logits`` (mmseg's default output; (classes, H,
W) floats, which large images cannot afford).
"""
from typing import Optional

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.structures import SegDataSample

from .inputs import tensor_source, token_dtype
from .predict import predict

STREAM_KEYS = ('mode', 'band_rows', 'tokens_per_band', 'return_logits', 'token_dtype',
               'token_device', 'max_ram_gb', 'scratch_dir')


class StreamingEncoderDecoder(EncoderDecoder):
    """EncoderDecoder whose ``test_cfg.mode`` may also be 'stream' (UFOViT
    backbones; UPerHead or FPNHead, optionally an FPN neck)."""

    def _stream_cfg(self) -> Optional[dict]:
        cfg = self.test_cfg or {}
        if cfg.get('mode', 'whole') != 'stream':
            return None
        unknown = set(cfg) - set(STREAM_KEYS)
        if unknown:
            raise KeyError(f'test_cfg keys {sorted(unknown)} have no meaning in mode stream; '
                           f'valid: {", ".join(STREAM_KEYS)}')
        return cfg

    def inference(self, inputs, batch_img_metas):
        if self._stream_cfg() is None:
            return super().inference(inputs, batch_img_metas)
        # the full logits (mmseg's contract for inference()); predict() avoids them
        return torch.cat([self._stream_one(inputs[i:i + 1], meta, with_logits=True)[1]
                          for i, meta in enumerate(batch_img_metas)])

    def predict(self, inputs: torch.Tensor, data_samples=None):
        cfg = self._stream_cfg()
        if cfg is None:
            return super().predict(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(inputs.shape[0])]
        keep = bool(cfg.get('return_logits', False))
        for i, sample in enumerate(data_samples):
            labels, logits = self._stream_one(inputs[i:i + 1], sample.metainfo, keep)
            sample.set_data({'pred_sem_seg': PixelData(data=labels)})
            if keep:
                sample.set_data({'seg_logits': PixelData(data=logits[0])})
        return data_samples

    def _stream_one(self, inputs, meta, with_logits):
        cfg = self.test_cfg
        labels, logits = predict(
            self, tensor_source(inputs, self.backbone.check_finite), inputs.shape[1],
            meta or None, cfg.get('band_rows'), cfg.get('tokens_per_band'),
            with_logits=with_logits, token_dtype=token_dtype(cfg.get('token_dtype')),
            token_device=cfg.get('token_device'), labels_device=inputs.device,
            max_ram_gb=cfg.get('max_ram_gb'), scratch_dir=cfg.get('scratch_dir'))
        return labels, logits
