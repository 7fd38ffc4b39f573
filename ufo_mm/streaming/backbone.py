"""UFO-ViT's forward pass without a full-resolution map: the tokens in bands.

The same math as :meth:`UFOViT.forward` (docs/model.md), in an order that
holds only the token tensor whole:

- patch embedding and position encoding: bands of token rows, each computed
  from the image rows its stride-2 convolutions reach (:mod:`.bands`);
- each block in two passes over bands of token rows: first k^T v, a sum over
  all tokens, added up band by band; then per band the queries, XNorm, the
  projection and the residual, the LPI (two 3x3 depthwise convolutions: a halo
  of two token rows) and the MLP, written in place over the block's input
  unless that is a kept output;
- the outputs of the four ``out_indices`` blocks are kept (that is the
  memory: four token tensors), and the pyramid adapters become band
  nodes on them, so the stride-4 map is never formed whole.

Only UFO attention streams this way (its k^T v is a sum over tokens);
softmax and XCA attention do not.

The bands are computed on the backbone's device. The whole token tensors
live in a :class:`.tokens.TokenStore`: on that device, or on a GPU's host
(pinned) when they do not fit in its memory, or in files when they do not fit
a memory budget (``token_device``, ``max_ram``).
"""
from functools import partial
from typing import Callable, List, Optional, Union

import torch

from ..analysis import process_stats
from ..models.ufo_vit import UFOViT
from . import bands
from .tokens import TokenStore, choose_place, resolve_place

#: tokens per band of the blocks on the CPU (a few MB per band tensor at C = 384)
TOKENS_PER_BAND = 8192
#: tokens per band on a GPU: bands large enough to keep it busy (0.4 GB per
#: (N, C) float32 band at C = 384, 1.6 GB for the MLP's hidden band)
TOKENS_PER_BAND_CUDA = 1 << 18


#: the patch embedding's bands are this many times smaller than the blocks':
#: its stride-2 convolutions hold maps of several times C values per token
#: (measured: 72 KB a token at C = 384, patch 16, docs/large_images.md)
EMBED_BAND_DIVISOR = 4


def default_tokens_per_band(device: torch.device) -> int:
    return TOKENS_PER_BAND_CUDA if torch.device(device).type == 'cuda' else TOKENS_PER_BAND


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, R, W) rows of a token map -> (B, R * W, C) tokens."""
    B, C, R, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, R * W, C)


def _grid(t: torch.Tensor, R: int, W: int) -> torch.Tensor:
    """(B, R * W, C) tokens -> (B, C, R, W) rows (a view)."""
    B, N, C = t.shape
    return t.reshape(B, R, W, C).permute(0, 3, 1, 2)


class StreamedUFOViT:
    """Runs a :class:`UFOViT` on an image given as a band node.

    Args:
        backbone: the model (eval mode, UFO attention); its own modules and
            weights are used.
        tokens_per_band: tokens per band in the blocks.
        token_dtype: dtype the whole token tensors are stored in (default:
            the computation's, float32). ``torch.bfloat16`` or
            ``torch.float16`` halve the memory of the largest images; every
            band is still computed in float32, but the values are rounded
            where they are stored, so the result is close to, not equal to,
            the unstreamed model's.
        tick: called with no argument after each unit of work (a band of a
            pass), for progress reports; :meth:`work` says how many there are.
        token_device: where the whole token tensors live: 'auto' (default:
            on the backbone's device, except on a GPU whose free memory they
            do not fit: then in pinned host memory), the backbone's device,
            or 'cpu' (on a GPU: pinned host memory, each band copied in and
            its result copied back, overlapped with the computation), or
            'disk' (files in ``scratch_dir``, read and written band by band;
            what 'auto' chooses when they do not fit ``max_ram``).
            None: 'auto'.
        max_ram: a memory budget, bytes of resident memory for the whole
            process (None: no budget). The token tensors stay in memory when
            they fit it beside what the process holds and a band's working
            memory (:meth:`band_bytes` plus ``head_band_bytes``), else they go
            to disk; a budget smaller than a band's needs raises
            :class:`.tokens.MemoryBudgetError`.
        scratch_dir: where the files of 'disk' go (in a temporary folder
            made there and removed at the end; None: the system's
            temporary folder).
        head_band_bytes: working memory of one band of what follows the
            backbone (the heads), for the budget.
        kernels: what computes the block's steps (``ufo_mm.models.ufo_vit.Kernels``);
            None: those the whole-image forward takes on this device (the fast
            CPU kernels in CPU inference).

    The bands are computed on the backbone's device (its parameters').
    """

    def __init__(self, backbone: UFOViT, tokens_per_band: Optional[int] = None,
                 tick: Optional[Callable[[], None]] = None,
                 token_dtype: Optional[torch.dtype] = None,
                 token_device: Union[str, torch.device, None] = None,
                 max_ram: Optional[int] = None, scratch_dir=None, head_band_bytes: int = 0,
                 kernels=None):
        if not isinstance(backbone, UFOViT):
            raise TypeError(f'streamed inference needs a UFOViT backbone, got '
                            f'{type(backbone).__name__}')
        if backbone.attn_type != 'ufo':
            raise ValueError(f'streamed inference needs UFO attention (a sum over tokens), '
                             f'got attn_type={backbone.attn_type!r}')
        if backbone.training:
            raise RuntimeError('streamed inference needs the backbone in eval mode')
        self.m = backbone
        self.device = next(backbone.parameters()).device
        self.tokens_per_band = tokens_per_band or default_tokens_per_band(self.device)
        self.token_place = resolve_place(token_device, self.device)
        self.store: Optional[TokenStore] = None
        #: what the memory budget was weighed on (bytes): held_bytes (the
        #: process's resident set before the tokens), band_bytes, token_bytes
        self.memory: dict = {}
        self.tick = tick or (lambda: None)
        if token_dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f'token_dtype must be float32, bfloat16 or float16, got {token_dtype}')
        self.token_dtype = token_dtype
        self.max_ram, self.scratch_dir = max_ram, scratch_dir
        self.head_band_bytes = head_band_bytes
        self.kernels = kernels
        #: the kept token tensors (B, N, C) of the last image, in the store
        self.kept: list = []

    def token_bytes(self, image_size, batch: int = 1) -> int:
        """Bytes of the token tensors held at once: the four kept outputs and
        the block being computed."""
        Hp, Wp = self.grid(image_size)
        item = torch.finfo(self.token_dtype or torch.float32).bits // 8
        return (len(self.m.out_indices) + 1) * batch * Hp * Wp * self.m.embed_dims * item

    def band_bytes(self) -> int:
        """Working memory of one band (float32), an estimate with a margin
        (measured: docs/large_images.md): of the blocks, the band's tokens
        and what a block makes of them (norms, q, k and v, the residuals, the
        LPI's halo rows, the MLP's 4C hidden layer: 16 C values a token); of
        the patch embedding, its convolutions' maps (64 C a token, in bands
        ``EMBED_BAND_DIVISOR`` times smaller)."""
        C = self.m.embed_dims
        return 4 * C * max(16 * self.tokens_per_band,
                           64 * self.tokens_per_band // EMBED_BAND_DIVISOR)

    def grid(self, image_size):
        p = self.m.patch_size
        H, W = image_size
        return (H + p - 1) // p, (W + p - 1) // p

    def band_rows(self, grid_width: int) -> int:
        """Token rows per band of a grid ``grid_width`` tokens wide."""
        return max(1, self.tokens_per_band // grid_width)

    def embed_band_rows(self, grid_width: int) -> int:
        """Token rows per band of the patch embedding."""
        return max(1, self.tokens_per_band // EMBED_BAND_DIVISOR // grid_width)

    def work(self, image_size) -> int:
        """Units of work (ticks) of one image."""
        Hp, Wp = self.grid(image_size)
        n = -(-Hp // self.band_rows(Wp))
        return -(-Hp // self.embed_band_rows(Wp)) + n * 2 * len(self.m.blocks)

    @torch.no_grad()
    def __call__(self, image: bands.Node, channels: int) -> List[bands.Node]:
        """The pyramid (strides 4, 8, 16, 32) of ``image``, a node of
        (B, channels, H, W) normalised pixels, as band nodes."""
        self.m.check_geometry(channels, image.height, image.width)
        token_bytes = self.token_bytes(image.size)
        if self.max_ram is not None:
            process_stats.release_free_heap()
        m = self.memory = dict(held_bytes=process_stats.rss_bytes(), token_bytes=token_bytes,
                               band_bytes=max(self.band_bytes(), self.head_band_bytes))
        place = choose_place(token_bytes, self.device, self.token_place, max_ram=self.max_ram,
                             band_bytes=m['band_bytes'], held_bytes=m['held_bytes'])
        self.store = TokenStore(self.device, place, self.token_dtype, self.scratch_dir,
                                disk_bytes=token_bytes)
        if self.kernels is None:  # those the whole-image forward would take
            self.kernels = self.m.kernels_for(torch.empty(0, device=self.device))
        x, (Hp, Wp) = self.embed(image)
        feats = []
        for i, blk in enumerate(self.m.blocks):
            # a block after a pyramid output writes a new tensor, the others update in place
            x = self.block(blk, x, Hp, Wp, in_place=not (feats and x is feats[-1]))
            if i in self.m.out_indices:
                feats.append(x)
        self.kept = feats
        return self.pyramid(feats, Hp, Wp, image.size)

    def close(self):
        """Free the token tensors' files, if they went to disk (after the
        last band of the heads was computed)."""
        if self.store is not None:
            self.store.close()

    def embed(self, image: bands.Node):
        """Tokens (B, Hp * Wp, C) with the position encoding added."""
        m, k = self.m, self.kernels
        emb = image
        for conv, norm, act in m.patch_embed.layers():
            emb = bands.Conv(conv, emb, kernel=partial(k.conv, conv, norm, act))
        Hp, Wp = emb.size

        def add_position(x, a, b):
            return x + m.pos_embed.rows((Hp, Wp), a, b, x.device).to(x.dtype)
        emb = bands.Map(add_position, emb, rows=True)
        tokens = None

        def sink(a, b, rows):
            nonlocal tokens
            if tokens is None:
                tokens = self.store.empty(rows.shape[0], Hp * Wp, rows.shape[1])
            self.store.write(tokens, a * Wp, b * Wp, _tokens(rows))
            self.tick()
        bands.evaluate(emb, self.embed_band_rows(Wp), sink)
        return tokens, (Hp, Wp)

    def block(self, blk, x: torch.Tensor, Hp: int, Wp: int, in_place: bool = False
              ) -> torch.Tensor:
        """One block (``UFOBlock``'s steps) on tokens (B, N, C), in two passes;
        the result in a new tensor, or in ``x`` itself (``in_place``). In place
        is safe because a band's output rows are written after the rows of
        ``x`` they depend on were read, and the band graph never reads a row
        of ``x`` twice (the halo rows of the next band are held from this
        one)."""
        k, store, R = self.kernels, self.store, self.band_rows(Wp)
        store.barrier()  # the reads below see the last pass's writes
        # pass 1: k^T v, a sum over all tokens, band by band
        kv = None
        for a in range(0, Hp, R):
            part = blk.key_values(store.read(x, a * Wp, min(a + R, Hp) * Wp).float(), k)
            kv = part if kv is None else kv.add_(part)
            self.tick()
        kv = blk.attn.normalise_kv(kv)

        # pass 2, per band: the attention residual; then, with a halo of two
        # token rows for the LPI's two 3x3 convolutions, the LPI and MLP ones
        def attention(rows):
            return _grid(blk.attention_residual(_tokens(rows), k, kv), rows.shape[2], Wp)

        def lpi_mlp(rows, top, bottom):
            t = blk.lpi_residual(_tokens(rows), k, Wp, halo=(top, bottom))
            t = blk.mlp_residual(t, k, in_place=True)  # t is the step's own new tensor
            return _grid(t, rows.shape[2] - top - bottom, Wp)

        out_node = bands.Window(lpi_mlp, bands.Map(attention, self.rows_of(x, Hp, Wp)), halo=2)
        out = x if in_place else store.empty(*x.shape)

        def sink(a, b, rows):
            store.write(out, a * Wp, b * Wp, _tokens(rows))
            self.tick()
        bands.evaluate(out_node, R, sink)
        return out

    def rows_of(self, t: torch.Tensor, Hp: int, Wp: int) -> bands.Node:
        """Token rows of a stored (B, Hp * Wp, C) tensor as a node of float32
        (B, C, rows, Wp) maps on the computing device. In place on the device
        (float32 storage): a view of the tensor itself, held whole."""
        if self.store.place == 'compute' and t.dtype == torch.float32:
            return bands.Tensor(_grid(t, Hp, Wp))
        return bands.Source(lambda a, b: _grid(self.store.read(t, a * Wp, b * Wp), b - a, Wp),
                            (Hp, Wp))

    def pyramid(self, feats, Hp, Wp, image_size) -> List[bands.Node]:
        """Band nodes of the four adapters on the kept block outputs, cropped
        to ``UFOViT.pyramid_sizes`` as the reference does."""
        m = self.m
        nodes = []
        adapters = (m.fpn1, m.fpn2, m.fpn3, m.fpn4)
        self.store.barrier()
        for adapter, f, size in zip(adapters, feats, m.pyramid_sizes(image_size)):
            node = bands.module_node(adapter, self.rows_of(f, Hp, Wp))
            if node.size != tuple(size):
                node = bands.Crop(node, size)
            nodes.append(node)
        return nodes
