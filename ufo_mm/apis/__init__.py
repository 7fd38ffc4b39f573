"""Entry points over mmengine/mmdet/mmseg: build a model from a config, build a runner.

Import the submodules (``ufo_mm.apis.builder``, ``ufo_mm.apis.runner``); this
package imports nothing itself, so that ``import ufo_mm`` stays light.
"""
