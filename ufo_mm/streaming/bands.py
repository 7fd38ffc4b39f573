"""Feature maps computed in bands of full-width rows, with exactly the values
of the whole-map computation.

A network of convolutions, poolings, resizes and element-wise steps is
written as a graph of :class:`Node` s. Each node is a map of a known size
(height, width) whose rows ``[a, b)`` it can compute from rows of its inputs:
:meth:`Node.needs` says which, :meth:`Node.compute` computes them. Zero padding
is applied only where the whole map has it, at its real top and bottom edges
(a band's other edges are its neighbours' rows), and the widths are whole, so
every op sees exactly the numbers it sees on the whole map.

:func:`evaluate` walks the output node's rows top to bottom in bands. For
each band it plans, from the output backwards, the rows every node must hold
(the union of what its consumers need), then computes the nodes in order, each
only for the rows it does not hold yet from the previous band: a halo row is
computed once, not once per band, so the cost is that of the whole map. A
node drops its rows as soon as no later consumer can need them. Memory is the
bands plus whatever the graph holds whole (:class:`Whole`, :class:`Tensor`).

Resizes follow PyTorch's ``F.interpolate`` index arithmetic ('bilinear' and
'nearest', ``align_corners`` either way, by size or by scale factor) along the
rows and call ``F.interpolate`` itself along the (whole) width.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Size = Tuple[int, int]


class Node:
    """A (B, C, height, width) map computed in bands of rows.

    Subclasses set ``inputs`` and ``size`` and define :meth:`needs` and
    :meth:`compute`; :meth:`fetch` gives them their inputs' rows.
    """

    #: held whole until :func:`evaluate` ends (not released between bands)
    whole = False

    def __init__(self, inputs: Sequence['Node'], size: Size):
        self.inputs = list(inputs)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f'{type(self).__name__}: empty map of size {self.size}')
        self._lo = 0  # rows [_lo, _lo + len) are held in _rows
        self._rows: Optional[torch.Tensor] = None

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def needs(self, a: int, b: int) -> List[Tuple[int, int]]:
        """Rows of each input that rows ``[a, b)`` of this map depend on
        (may reach past the input's edges, where it is zero-padded)."""
        raise NotImplementedError

    def compute(self, a: int, b: int) -> torch.Tensor:
        """Rows ``[a, b)`` of this map, (B, C, b - a, width)."""
        raise NotImplementedError

    def fetch(self, i: int, a: int, b: int, pad: bool = True) -> torch.Tensor:
        """Rows ``[a, b)`` of input ``i``; rows outside the input are zeros
        (``pad``) or left out (``pad=False``)."""
        return self.inputs[i].held(a, b, pad)

    # -- held rows, managed by evaluate() --------------------------------------------------
    def held(self, a: int, b: int, pad: bool = True) -> torch.Tensor:
        lo, hi = max(a, 0), min(b, self.height)
        rows = self._rows
        if rows is None or lo < self._lo or hi > self._lo + rows.shape[2]:
            held = (self._lo, self._lo + (0 if rows is None else rows.shape[2]))
            raise RuntimeError(f'{self!r}: rows [{lo}, {hi}) asked for, [{held[0]}, {held[1]}) '
                               'held (a node was computed before its inputs?)')
        out = rows[:, :, lo - self._lo:hi - self._lo]
        if pad and (lo > a or hi < b):
            out = F.pad(out, (0, 0, lo - a, b - hi))
        return out

    def advance(self, lo: int, hi: int):
        """Hold rows ``[lo, hi)``, computing only those not held yet (the
        bands move down, so a band's first rows are usually the last band's)."""
        rows, start = self._rows, self._lo
        end = start + (0 if rows is None else rows.shape[2])
        if rows is not None and start <= lo < end:
            kept = rows[:, :, lo - start:]
            self._rows = kept if hi <= end else torch.cat([kept, self.compute(end, hi)], dim=2)
        else:
            self._rows = self.compute(lo, hi)
        self._lo = lo

    def _trim(self, lo: int):
        if self._rows is not None and lo > self._lo:
            self._rows = self._rows[:, :, lo - self._lo:]
            self._lo = lo

    def release(self):
        self._rows, self._lo = None, 0

    def __repr__(self):
        return f'{type(self).__name__}{self.size}'


class Source(Node):
    """Rows given by a function ``fn(a, b) -> (B, C, b - a, width)``."""

    def __init__(self, fn: Callable[[int, int], torch.Tensor], size: Size):
        super().__init__([], size)
        self.fn = fn

    def needs(self, a, b):
        return []

    def compute(self, a, b):
        return self.fn(a, b)


class Tensor(Node):
    """A map held whole, e.g. a block's output tokens (any memory format)."""
    whole = True

    def __init__(self, tensor: torch.Tensor):
        super().__init__([], tensor.shape[-2:])
        self.tensor = tensor

    def needs(self, a, b):
        return []

    def compute(self, a, b):
        return self.tensor[:, :, a:b]

    def advance(self, lo, hi):
        self._rows, self._lo = self.tensor, 0

    def _trim(self, lo):
        pass


class Whole(Node):
    """``fn`` of its whole input, computed once and held (a global step such
    as pyramid pooling on a small map)."""
    whole = True

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], inp: Node, size: Size):
        super().__init__([inp], size)
        self.fn = fn

    def needs(self, a, b):
        # once computed, its input is needed no more
        return [] if self._rows is not None else [(0, self.inputs[0].height)]

    def compute(self, a, b):
        out = self.fn(self.fetch(0, 0, self.inputs[0].height))
        if tuple(out.shape[-2:]) != self.size:
            raise RuntimeError(f'{self!r}: fn gave a map of size {tuple(out.shape[-2:])}')
        return out

    def advance(self, lo, hi):
        if self._rows is None:
            self._rows, self._lo = self.compute(0, self.height), 0

    def _trim(self, lo):
        pass


class Map(Node):
    """Row-wise ``fn(*input_rows)`` of inputs of one height (``rows=True``:
    ``fn(*input_rows, a=a, b=b)``): element-wise steps, sums, concatenation,
    anything that mixes channels or columns but not rows."""

    def __init__(self, fn: Callable, *inputs: Node, width: Optional[int] = None,
                 rows: bool = False):
        heights = {n.height for n in inputs}
        if len(heights) != 1:
            raise ValueError(f'Map of inputs of different heights: {[n.size for n in inputs]}')
        super().__init__(inputs, (heights.pop(), width or inputs[0].width))
        self.fn = fn
        self.rows = rows

    def needs(self, a, b):
        return [(a, b)] * len(self.inputs)

    def compute(self, a, b):
        args = [self.fetch(i, a, b) for i in range(len(self.inputs))]
        return self.fn(*args, a=a, b=b) if self.rows else self.fn(*args)


def add(*inputs: Node) -> Map:
    return Map(lambda *xs: sum(xs[1:], xs[0]), *inputs)


class Cat(Map):
    """Channel concatenation. A convolution of it convolves its parts
    instead (:class:`Conv`): the concatenated band is never formed."""

    def __init__(self, *inputs: Node):
        super().__init__(lambda *xs: torch.cat(xs, dim=1), *inputs)


def cat(*inputs: Node) -> Cat:
    return Cat(*inputs)


class Conv(Node):
    """``post(conv(x))`` for an ``nn.Conv2d`` with zero padding; ``post`` is
    row-wise (a norm, an activation). On a :class:`Cat` of parts it is the
    sum of the convolutions of the parts with their slices of the weight.
    ``kernel(x, padding)``, if given, computes ``post(conv(x))`` itself (a
    fused kernel) with the padding it is given: the rows come padded."""

    def __init__(self, conv: nn.Conv2d, inp: Node, post: Optional[Callable] = None,
                 kernel: Optional[Callable] = None):
        if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise ValueError(f'banded convolution needs numeric zero padding, got {conv}')
        if kernel is not None and (post is not None or isinstance(inp, Cat)):
            raise ValueError('a convolution kernel computes its post step itself, '
                             'on one input')
        self.conv, self.post, self.kernel = conv, post, kernel
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        (ph, pw), (dh, dw) = conv.padding, conv.dilation
        self.k, self.s, self.p, self.d = kh, sh, ph, dh
        H, W = inp.size
        size = ((H + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        parts = inp.inputs if isinstance(inp, Cat) and conv.groups == 1 else [inp]
        super().__init__(parts, size)

    def needs(self, a, b):
        rows = (a * self.s - self.p, (b - 1) * self.s - self.p + self.d * (self.k - 1) + 1)
        return [rows] * len(self.inputs)

    def compute(self, a, b):
        rows = self.needs(a, b)[0]
        c = self.conv
        if self.kernel is not None:
            return self.kernel(self.fetch(0, *rows), (0, c.padding[1]))
        args = (c.stride, (0, c.padding[1]), c.dilation, c.groups)
        if len(self.inputs) == 1:
            y = F.conv2d(self.fetch(0, *rows), c.weight, c.bias, *args)
        else:
            y, start = None, 0
            for i in range(len(self.inputs)):
                x = self.fetch(i, *rows)
                w = c.weight[:, start:start + x.shape[1]]
                start += x.shape[1]
                if y is None:
                    y = F.conv2d(x, w, c.bias, *args)
                else:
                    y += F.conv2d(x, w, None, *args)
        return self.post(y) if self.post is not None else y


class Window(Node):
    """Rows ``[a, b)`` from input rows ``[a - halo, b + halo)``, clipped to the
    map: ``fn(rows, top, bottom)`` gets those rows, ``top`` and ``bottom`` of
    them the halo rows above ``a`` and below ``b``, and returns rows
    ``[a, b)``. For a step that pads the map's edges itself (a chain of
    convolutions on the rows, their halo discarded)."""

    def __init__(self, fn: Callable, inp: Node, halo: int):
        super().__init__([inp], inp.size)
        self.fn, self.halo = fn, halo

    def needs(self, a, b):
        return [(a - self.halo, b + self.halo)]

    def compute(self, a, b):
        lo, hi = max(a - self.halo, 0), min(b + self.halo, self.height)
        return self.fn(self.fetch(0, lo, hi, pad=False), a - lo, hi - b)


class ConvTranspose(Node):
    """``nn.ConvTranspose2d`` with kernel = stride and no padding (the
    pyramid's 2x up-sampling): output row r comes from input row r // s."""

    def __init__(self, conv: nn.ConvTranspose2d, inp: Node):
        if conv.kernel_size != conv.stride or any(conv.padding) or any(conv.output_padding) \
                or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError(f'banded transposed convolution needs kernel == stride, no padding: '
                             f'{conv}')
        self.conv, self.s = conv, conv.stride[0]
        super().__init__([inp], (inp.height * self.s, inp.width * conv.stride[1]))

    def needs(self, a, b):
        return [(a // self.s, (b - 1) // self.s + 1)]

    def compute(self, a, b):
        lo, hi = self.needs(a, b)[0]
        c = self.conv
        y = F.conv_transpose2d(self.fetch(0, lo, hi), c.weight, c.bias, c.stride)
        return y[:, :, a - lo * self.s:b - lo * self.s]


class MaxPool(Node):
    """``F.max_pool2d`` without padding (``ceil_mode`` either way)."""

    def __init__(self, inp: Node, kernel_size: int, stride: int, ceil_mode: bool = False):
        self.k, self.s, self.ceil_mode = kernel_size, stride, ceil_mode

        def out(n):
            m = (n - kernel_size + (stride - 1 if ceil_mode else 0)) // stride + 1
            if ceil_mode and (m - 1) * stride >= n:
                m -= 1  # the last window must start inside the input
            return m
        super().__init__([inp], (out(inp.height), out(inp.width)))

    def needs(self, a, b):
        return [(a * self.s, (b - 1) * self.s + self.k)]

    def compute(self, a, b):
        x = self.fetch(0, *self.needs(a, b)[0], pad=False)
        y = F.max_pool2d(x, self.k, self.s, ceil_mode=self.ceil_mode)
        return y[:, :, :b - a]


def _source_index(out_lo: int, out_hi: int, in_size: int, out_size: int, mode: str,
                  align_corners: Optional[bool], scale_factor: Optional[float]):
    """PyTorch's upsampling index arithmetic (ATen UpSample.h) for output
    indices [out_lo, out_hi): (i0, i1, lambda) for 'bilinear' (out = (1 -
    lambda) in[i0] + lambda in[i1]), (i0, None, None) for 'nearest'."""
    dst = torch.arange(out_lo, out_hi, dtype=torch.float32)
    if mode == 'nearest':
        if out_size == in_size:
            i0 = dst.long()
        elif out_size == 2 * in_size:
            i0 = dst.long() >> 1
        else:
            scale = torch.tensor(1. / scale_factor if scale_factor else in_size / out_size,
                                 dtype=torch.float32)
            i0 = torch.floor(dst * scale).long().clamp_max(in_size - 1)
        return i0, None, None
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.
        src = dst * torch.tensor(scale, dtype=torch.float32)
    else:
        scale = torch.tensor(1. / scale_factor if scale_factor else in_size / out_size,
                             dtype=torch.float32)
        src = ((dst + 0.5) * scale - 0.5).clamp_min(0)
    i0 = torch.floor(src).long().clamp_max(in_size - 1)
    lam = (src - i0.float()).clamp(0, 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, lam


#: the largest integer row factor a :class:`Resize` computes with
#: ``F.interpolate`` on a band of input rows (the pyramid's 2x to 8x); larger
#: ones compute only the rows asked for, by the index arithmetic
MAX_BAND_FACTOR = 8


class Resize(Node):
    """``F.interpolate(x, size or scale_factor, mode, align_corners)`` for
    'bilinear' and 'nearest': along the rows by the index arithmetic above,
    along the width by ``F.interpolate`` itself (1-d)."""

    MODES = ('bilinear', 'nearest')

    def __init__(self, inp: Node, size: Optional[Size] = None, scale_factor: Optional[float] = None,
                 mode: str = 'bilinear', align_corners: Optional[bool] = None):
        if mode not in self.MODES:
            raise ValueError(f'banded resize supports {self.MODES}, got {mode!r}')
        if (size is None) == (scale_factor is None):
            raise ValueError('Resize needs exactly one of size and scale_factor')
        if isinstance(scale_factor, (tuple, list)):
            if len(set(scale_factor)) != 1:
                raise ValueError(f'banded resize needs one scale factor, got {scale_factor}')
            scale_factor = scale_factor[0]
        self.mode = mode
        self.align_corners = bool(align_corners) if mode == 'bilinear' else None
        self.scale_factor = float(scale_factor) if scale_factor else None
        if size is None:
            size = tuple(int(math.floor(n * self.scale_factor)) for n in inp.size)
        super().__init__([inp], size)
        self.identity = size == inp.size and not self.scale_factor
        # An integer up-sampling factor f of the rows (out = f * in) without
        # align_corners is translation-equivariant in steps of f input rows:
        # F.interpolate on a band with one input row of margin above and
        # below gives the whole map's rows. It computes f rows per input row,
        # so only small factors take that route: a pooled 1 x 1 map resized
        # back to a 512-row map (UperNet's pyramid pooling at 16384 px) would
        # make all 512 rows for every band (1 GiB, 2 s each time).
        f = self.height // inp.height
        self.factor = f if (2 <= f <= MAX_BAND_FACTOR and self.height == f * inp.height and
                            not self.align_corners and
                            (not self.scale_factor or self.scale_factor == f)) else None

    def _index(self, a, b):
        return _source_index(a, b, self.inputs[0].height, self.height, self.mode,
                             self.align_corners, self.scale_factor)

    def needs(self, a, b):
        if self.identity:
            return [(a, b)]
        if self.factor:
            return [(a // self.factor - 1, (b - 1) // self.factor + 2)]
        i0, i1, _ = self._index(a, b)
        return [(int(i0.min()), int((i0 if i1 is None else i1).max()) + 1)]

    def _resize_width(self, x):
        if x.shape[-1] == self.width and not self.scale_factor:
            return x
        B, C, R, W = x.shape
        kw = dict(scale_factor=self.scale_factor) if self.scale_factor else dict(size=self.width)
        mode = 'linear' if self.mode == 'bilinear' else 'nearest'
        y = F.interpolate(x.reshape(B, C * R, W), mode=mode, align_corners=self.align_corners,
                          **kw)
        return y.reshape(B, C, R, self.width)

    def compute(self, a, b):
        if self.identity:
            return self.fetch(0, a, b)
        if self.factor:
            f = self.factor
            lo, hi = self.needs(a, b)[0]
            lo, hi = max(lo, 0), min(hi, self.inputs[0].height)
            x = self.fetch(0, lo, hi)
            kw = dict(align_corners=False) if self.mode == 'bilinear' else {}
            y = F.interpolate(x, size=(f * (hi - lo), self.width), mode=self.mode, **kw)
            return y[:, :, a - f * lo:b - f * lo]
        i0, i1, lam = self._index(a, b)
        lo, hi = self.needs(a, b)[0]
        x = self._resize_width(self.fetch(0, lo, hi).contiguous())
        i0 = (i0 - lo).to(x.device)  # the index arithmetic runs on the CPU
        if i1 is None:
            return x[:, :, i0]
        lam = lam.to(x.device, x.dtype).view(1, 1, -1, 1)
        return x[:, :, i0] * (1 - lam) + x[:, :, (i1 - lo).to(x.device)] * lam


class Crop(Node):
    """Rows ``[top, top + height)`` and columns ``[left, left + width)`` of the input."""

    def __init__(self, inp: Node, size: Size, top: int = 0, left: int = 0):
        if top < 0 or left < 0 or top + size[0] > inp.height or left + size[1] > inp.width:
            raise ValueError(f'crop {size} at ({top}, {left}) outside a map of size {inp.size}')
        super().__init__([inp], size)
        self.top, self.left = top, left

    def needs(self, a, b):
        return [(a + self.top, b + self.top)]

    def compute(self, a, b):
        x = self.fetch(0, a + self.top, b + self.top)
        return x[..., self.left:self.left + self.width]


class Collect(Node):
    """Several maps of different heights (a pyramid) computed together and
    stored whole: band ``[a, b)`` of the finest (tallest) one holds rows
    ``[a * h // H, b * h // H)`` of a map ``h`` rows high, so one
    :func:`evaluate` walks every level down at once and their shared inputs
    are computed once. :attr:`outputs` are the whole maps (in ``dtype``, by
    default their own) once evaluated; the node's own rows are a dummy."""

    def __init__(self, nodes: Sequence[Node], dtype: Optional[torch.dtype] = None):
        if not nodes:
            raise ValueError('Collect needs at least one node')
        super().__init__(nodes, (max(n.height for n in nodes), 1))
        self.dtype = dtype
        self.outputs: List[Optional[torch.Tensor]] = [None] * len(nodes)

    def _range(self, n: Node, a: int, b: int) -> Tuple[int, int]:
        H = self.height
        return a * n.height // H, b * n.height // H

    def needs(self, a, b):
        return [self._range(n, a, b) for n in self.inputs]

    def compute(self, a, b):
        for i, n in enumerate(self.inputs):
            lo, hi = self._range(n, a, b)
            if lo >= hi:
                continue
            rows = self.fetch(i, lo, hi)
            if self.outputs[i] is None:
                self.outputs[i] = rows.new_empty(rows.shape[:2] + n.size,
                                                 dtype=self.dtype or rows.dtype)
            self.outputs[i][:, :, lo:hi] = rows
        return torch.zeros(1, 1, b - a, 1)


def collect(nodes: Sequence[Node], band_rows: int, dtype: Optional[torch.dtype] = None,
            progress: Optional[Callable[[int, int], None]] = None) -> List[torch.Tensor]:
    """The whole maps of ``nodes``, computed together in bands of
    ``band_rows`` rows of the tallest (see :class:`Collect`)."""
    node = Collect(nodes, dtype)
    evaluate(node, band_rows, lambda a, b, rows: None, progress)
    return node.outputs


def adaptive_avg_pool(node: Node, sizes: Sequence[Size], band_rows: int) -> List[torch.Tensor]:
    """``F.adaptive_avg_pool2d(x, size)`` of the whole map ``x`` of ``node``
    for each of ``sizes``, the map computed in bands of ``band_rows`` rows
    (one walk for all sizes) and never held whole. PyTorch's bins: output
    row i averages input rows ``floor(i H / h)`` to ``ceil((i + 1) H / h)``,
    columns alike. Each band's rows are averaged over their column bins
    (``F.adaptive_avg_pool2d`` on the band itself) and summed into their row
    bins: the same mean, summed in another order (equal within rounding)."""
    H = node.height
    bins = []
    for h, _ in sizes:
        bins.append([(i * H // h, -(-(i + 1) * H // h)) for i in range(h)])
    sums: List[Optional[torch.Tensor]] = [None] * len(sizes)

    def sink(a, b, rows):
        for k, ((h, w), rbins) in enumerate(zip(sizes, bins)):
            cols = F.adaptive_avg_pool2d(rows, (b - a, w))  # (B, C, b - a, w)
            if sums[k] is None:
                sums[k] = cols.new_zeros(cols.shape[:2] + (h, w))
            for i, (lo, hi) in enumerate(rbins):
                lo, hi = max(lo, a), min(hi, b)
                if lo < hi:
                    sums[k][:, :, i] += cols[:, :, lo - a:hi - a].sum(dim=2)
    evaluate(node, band_rows, sink)
    counts = [torch.tensor([hi - lo for lo, hi in rbins], dtype=s.dtype, device=s.device)
              for rbins, s in zip(bins, sums)]
    return [s / n.view(1, 1, -1, 1) for s, n in zip(sums, counts)]


# -- modules as nodes ----------------------------------------------------------------------
ROW_WISE = (nn.modules.batchnorm._BatchNorm, nn.GELU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU,
            nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Hardswish)


def module_node(module: nn.Module, inp: Node) -> Node:
    """``module`` applied to ``inp`` as nodes: ``nn.Sequential``, convolutions,
    transposed 2x convolutions, max-pooling, row-wise layers (norms in eval
    mode, activations), mmcv's ``ConvModule`` and mmseg's ``Upsample``
    (recognised by their attributes). Anything else raises ``TypeError``."""
    if module.training and any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
                               for m in module.modules()):
        raise RuntimeError(f'banded evaluation needs eval mode: {type(module).__name__} is in '
                           'training mode')
    if isinstance(module, nn.Sequential):
        for m in module:
            inp = module_node(m, inp)
        return inp
    if isinstance(module, nn.Conv2d):
        return Conv(module, inp)
    if isinstance(module, nn.ConvTranspose2d):
        return ConvTranspose(module, inp)
    if isinstance(module, nn.MaxPool2d):
        k, s = module.kernel_size, module.stride
        square = all(not isinstance(v, tuple) or len(set(v)) == 1 for v in (k, s))
        if module.padding not in (0, (0, 0)) or module.dilation not in (1, (1, 1)) or not square:
            raise TypeError(f'banded max-pooling needs square windows, no padding: {module}')
        k = k[0] if isinstance(k, tuple) else k
        s = s[0] if isinstance(s, tuple) else s
        return MaxPool(inp, k, s, module.ceil_mode)
    if isinstance(module, ROW_WISE):
        return inp if isinstance(module, (nn.Identity, nn.Dropout, nn.Dropout2d)) \
            else Map(module, inp)
    if hasattr(module, 'conv') and hasattr(module, 'order') and hasattr(module, 'with_norm'):
        return _conv_module_node(module, inp)
    if type(module).__name__ == 'Upsample' and hasattr(module, 'align_corners'):
        if module.size:
            return Resize(inp, size=tuple(module.size), mode=module.mode,
                          align_corners=module.align_corners)
        # mmseg's Upsample turns its factor into a size: int(n * factor)
        size = tuple(int(n * module.scale_factor) for n in inp.size)
        return Resize(inp, size=size, mode=module.mode, align_corners=module.align_corners)
    raise TypeError(f'no banded form of {type(module).__name__}')


def _conv_module_node(module, inp: Node) -> Node:
    """mmcv's ConvModule: conv, norm and act in its ``order``."""
    if getattr(module, 'with_explicit_padding', False):
        raise TypeError(f'banded ConvModule needs zero padding inside the conv: {module}')
    parts = dict(conv=module.conv, norm=module.norm if module.with_norm else None,
                 act=module.activate if module.with_activation else None)
    layers = [parts[name] for name in module.order if parts[name] is not None]
    i = layers.index(module.conv)
    for m in layers[:i]:  # row-wise layers before the convolution
        inp = Map(m, inp)
    after = layers[i + 1:]
    return Conv(module.conv, inp, post=nn.Sequential(*after) if after else None)


# -- evaluation ----------------------------------------------------------------------------
def topological(output: Node) -> List[Node]:
    """Every node the output depends on, inputs before their consumers."""
    order, seen = [], set()

    def visit(n):
        stack = [(n, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((i, False) for i in reversed(node.inputs) if id(i) not in seen)
    visit(output)
    return order


def plan(order: List[Node], a: int, b: int) -> Dict[int, Tuple[int, int]]:
    """The rows every node must hold for rows ``[a, b)`` of the last node of
    ``order``: the union of its consumers' needs, clipped to the node."""
    need: Dict[int, Tuple[int, int]] = {id(order[-1]): (a, b)}
    for node in reversed(order):
        rng = need.get(id(node))
        if rng is None:
            continue
        for inp, (lo, hi) in zip(node.inputs, node.needs(*rng)):
            lo, hi = max(lo, 0), min(hi, inp.height)
            if lo >= hi:
                continue
            old = need.get(id(inp))
            need[id(inp)] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return need


def evaluate(output: Node, band_rows: int, sink: Callable[[int, int, torch.Tensor], None],
             progress: Optional[Callable[[int, int], None]] = None):
    """Compute ``output`` in bands of ``band_rows`` rows, top to bottom, and
    hand each to ``sink(a, b, rows)``. Nodes are released at the end."""
    if band_rows < 1:
        raise ValueError(f'band_rows must be >= 1, got {band_rows}')
    order = topological(output)
    bands = [(a, min(a + band_rows, output.height)) for a in range(0, output.height, band_rows)]
    consumers: Dict[int, List[Node]] = {}
    for node in order:
        for inp in node.inputs:
            consumers.setdefault(id(inp), []).append(node)
    try:
        need = plan(order, *bands[0])
        for k, (a, b) in enumerate(bands):
            after = plan(order, *bands[k + 1]) if k + 1 < len(bands) else {}
            pending = {id(n): len(consumers.get(id(n), ())) for n in order}
            for node in order:
                rng = need.get(id(node))
                if rng is not None:
                    node.advance(*rng)
                for inp in node.inputs:
                    pending[id(inp)] -= 1
                    if pending[id(inp)] == 0:  # no one needs it again in this band
                        nxt = after.get(id(inp))
                        if nxt is not None:
                            inp._trim(nxt[0])
                        elif not inp.whole:
                            inp.release()
            sink(a, b, output.held(a, b))
            if progress is not None:
                progress(k + 1, len(bands))
            need = after
    finally:
        for node in order:
            node.release()
