"""The UFO-ViT model sizes (XCiT's family shapes) and the arch names that
select them: a leaf module, imported by the model and by checkpoint
conversion alike."""
import re
from typing import Dict, Union

_DEPTH12 = dict(depth=12, layer_scale_init_value=1.0, out_indices=(3, 5, 7, 11))
_DEPTH24 = dict(depth=24, layer_scale_init_value=1e-5, out_indices=(7, 11, 15, 23))
# One entry per model size (XCiT family shapes); patch size is chosen apart.
ARCH_ZOO: Dict[str, dict] = {
    'tiny_12': dict(embed_dims=192, num_heads=4, **_DEPTH12),
    'small_12': dict(embed_dims=384, num_heads=8, **_DEPTH12),
    'small_24': dict(embed_dims=384, num_heads=8, **_DEPTH24),
    'medium_24': dict(embed_dims=512, num_heads=8, **_DEPTH24),
}
ARCH_ALIASES = {
    't12': 'tiny_12', 'tiny12': 'tiny_12', 'tiny': 'tiny_12',
    's12': 'small_12', 'small12': 'small_12',
    's24': 'small_24', 'small24': 'small_24',
    'm24': 'medium_24', 'medium24': 'medium_24', 'medium': 'medium_24',
}
PATCH_SIZES = (8, 16)
_ARCH_RE = re.compile(r'^(?P<size>[a-z]+[_-]?\d*?)(?:[_/-]p?(?P<patch>8|16))?$')


def arch_names() -> list:
    """Every accepted arch string: size names and aliases, bare or with ``_p8``/``_p16``."""
    sizes = sorted(ARCH_ZOO) + sorted(ARCH_ALIASES)
    return sizes + [f'{s}_p{p}' for s in sorted(ARCH_ZOO) for p in PATCH_SIZES]


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Turn an arch name ('small_12_p16', 'S12/16', 't12', ...) or a custom dict
    into a full setting dict with embed_dims, num_heads, depth, patch_size,
    layer_scale_init_value and out_indices.

    Raises:
        KeyError: an unknown name (the message lists the valid ones), or a custom
            dict that lacks a required key.
    """
    if isinstance(arch, dict):
        missing = {'embed_dims', 'num_heads', 'depth'} - set(arch)
        if missing:
            raise KeyError(f'custom arch dict is missing {sorted(missing)}; '
                           'required: embed_dims, num_heads, depth')
        depth = arch['depth']
        default = dict(_DEPTH12 if depth < 24 else _DEPTH24)
        default['out_indices'] = tuple(
            sorted({max(0, round(depth * f) - 1) for f in (1 / 3, 1 / 2, 2 / 3)} | {depth - 1}))
        setting = dict(default, patch_size=16)
        setting.update(arch)
        return setting
    if not isinstance(arch, str):
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
    m = _ARCH_RE.match(arch.strip().lower().replace('/', '_p'))
    size = m and m.group('size').replace('-', '_')
    size = ARCH_ALIASES.get(size, size)
    if not m or size not in ARCH_ZOO:
        raise KeyError(f'unknown UFO-ViT arch {arch!r}; valid: {", ".join(arch_names())} '
                       '(or a dict with embed_dims, num_heads and depth)')
    return dict(ARCH_ZOO[size], patch_size=int(m.group('patch') or 16))
