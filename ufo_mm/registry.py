"""Register ufo_mm's modules in mmdet's, mmseg's and mmpretrain's registries.

The dense backbone ``UFOViT`` goes into both mmdet's and mmseg's, because a
config's ``default_scope`` decides which registry builds the backbone ('mmdet'
for detectors, 'mmseg' for segmentors); the classifier's backbone
``UFOViTClsBackbone`` into mmpretrain's, for its ``ImageClassifier``. A library
that is not installed is skipped; any other import error propagates, so a
broken install is not hidden behind ``custom_imports``' generic ImportError.
"""
import importlib

from .models import UFOViT, UFOViTClsBackbone

REGISTERED_MODELS = {
    'mmdet': (UFOViT,),
    'mmseg': (UFOViT,),
    'mmpretrain': (UFOViTClsBackbone,),
}


def StreamingEncoderDecoder(**kwargs):
    """Builds :class:`ufo_mm.streaming.segmentor.StreamingEncoderDecoder`
    (mmseg's EncoderDecoder with test mode 'stream'). Registered as this
    function so that ``import ufo_mm`` does not import mmseg's model zoo;
    the class is imported when a config first builds it."""
    from .streaming.segmentor import StreamingEncoderDecoder as cls
    return cls(**kwargs)


def StreamingMaskRCNN(**kwargs):
    """Builds :class:`ufo_mm.streaming.detector.StreamingMaskRCNN` (mmdet's
    MaskRCNN with test mode 'stream'), imported when a config first builds it."""
    from .streaming.detector import StreamingMaskRCNN as cls
    return cls(**kwargs)


def _library_models(library: str) -> tuple:
    """Builders registered in one library only (of classes that subclass its own)."""
    return {'mmseg': (StreamingEncoderDecoder,), 'mmdet': (StreamingMaskRCNN,)}.get(library, ())


def _registry(library: str, name: str):
    try:
        module = importlib.import_module(f'{library}.registry')
    except ModuleNotFoundError as e:
        if e.name == library:
            return None
        raise
    return getattr(module, name)


def register_all() -> list:
    """Register into every installed library; returns the library names used."""
    used = []
    for library, classes in REGISTERED_MODELS.items():
        models = _registry(library, 'MODELS')
        if models is None:
            continue
        for cls in classes + _library_models(library):
            # module_dict, not get(): get() imports the library's whole model zoo.
            if models.module_dict.get(cls.__name__) is not cls:
                models.register_module(module=cls, force=True)
        used.append(library)
    return used
