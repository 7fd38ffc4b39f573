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
import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.structures import SegDataSample

from .inputs import SEGMENTOR, StreamConfig, stream_config, tensor_source
from .predict import predict


class StreamingEncoderDecoder(EncoderDecoder):
    """EncoderDecoder whose ``test_cfg.mode`` may also be 'stream' (UFOViT
    backbones; UPerHead or FPNHead, optionally an FPN neck). The keys of
    ``test_cfg`` are read and checked by :func:`.inputs.stream_config`."""

    def inference(self, inputs, batch_img_metas):
        cfg = stream_config(self.test_cfg, SEGMENTOR)
        if cfg is None:
            return super().inference(inputs, batch_img_metas)
        # the full logits (mmseg's contract for inference()); predict() avoids them
        return torch.cat([self._stream_one(inputs[i:i + 1], meta, cfg, with_logits=True)[1]
                          for i, meta in enumerate(batch_img_metas)])

    def predict(self, inputs: torch.Tensor, data_samples=None):
        cfg = stream_config(self.test_cfg, SEGMENTOR)
        if cfg is None:
            return super().predict(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(inputs.shape[0])]
        keep = bool(cfg.return_logits)
        for i, sample in enumerate(data_samples):
            labels, logits = self._stream_one(inputs[i:i + 1], sample.metainfo, cfg, keep)
            sample.set_data({'pred_sem_seg': PixelData(data=labels)})
            if keep:
                sample.set_data({'seg_logits': PixelData(data=logits[0])})
        return data_samples

    def _stream_one(self, inputs, meta, cfg: StreamConfig, with_logits: bool):
        """(labels, logits or None) of one normalised (1, C, H, W) input."""
        return predict(
            self, tensor_source(inputs, self.backbone.check_finite), inputs.shape[1],
            meta or None, cfg.band_rows, cfg.tokens_per_band, with_logits=with_logits,
            token_dtype=cfg.token_dtype, token_device=cfg.token_device,
            labels_device=inputs.device, max_ram_gb=cfg.max_ram_gb, scratch_dir=cfg.scratch_dir)
