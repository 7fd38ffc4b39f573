"""Predictions drawn on their image by mmdet's ``DetLocalVisualizer`` or mmseg's
``SegLocalVisualizer``, whichever library the model's config belongs to."""
import time


def draw_prediction(model, image_rgb, result, out_file, score_thr: float = 0.3) -> None:
    """Write ``image_rgb`` (H, W, 3) with ``result`` (a Det/SegDataSample) drawn
    to ``out_file``; detections below ``score_thr`` are left out. ``model``:
    one from :func:`ufo_mm.builder.build_model` (``cfg``, ``dataset_meta``)."""
    from ufo_mm.builder import library_of
    detection = library_of(model.cfg) == 'mmdet'
    if detection:
        from mmdet.visualization import DetLocalVisualizer as Visualizer
    else:
        from mmseg.visualization import SegLocalVisualizer as Visualizer
    vis = Visualizer.get_instance(f'ufo_highres_{time.monotonic_ns()}')
    vis.dataset_meta = model.dataset_meta
    kwargs = dict(pred_score_thr=score_thr) if detection else {}
    vis.add_datasample('prediction', image_rgb, data_sample=result, draw_gt=False,
                       show=False, out_file=str(out_file), **kwargs)
