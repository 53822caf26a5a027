"""Run a folded FINN dataflow design in numpy, bit-exactly, batched.

The build machine writes a portable model (``flows.executor_export``):
``<dir>/executor.json`` lists the layers in dataflow order (kind, name,
datatypes, shapes, folding, attribute values) and ``<dir>/executor.npz``
holds their integer weights and thresholds. `Executor` runs a batch
``(N, *input_shape)`` of integer inputs through them in integer-exact
arithmetic and returns what the accelerator streams out, for every image.

Each layer kind is one small class registered under FINN's generic op name
(``MVAU``, ``Thresholding``, ``LabelSelect``, ``ConvolutionInputGenerator``,
``FMPadding``, ``Pool``) and computes what that op's ``execute_node`` in FINN
computes, on NHWC (channels-last) data as FINN's HW layers use.

Exactness of the matrix products: integer operands go through float32 BLAS
only where every partial sum is provably an integer below 2**24 (see
`accumulator_dtype`); otherwise through numpy's integer matmul in int32 or
int64. Nothing rounds.

numpy and the standard library only (Python 3.10 + numpy 1.21 on the board,
Python 3.11 + numpy 2.4 on the build machine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host import datatypes
from host.errors import HostError, IOSpecError
from host.files import read_npz, read_versioned_json

FORMAT = "qnn-flows-executor/1"
JSON_NAME = "executor.json"
NPZ_NAME = "executor.npz"

FLOAT32_EXACT = 1 << 24  # every integer of magnitude <= 2**24 is a float32
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1

# OpenBLAS runs a small product on the calling thread and wakes its thread pool
# for larger ones (from about 2**20 multiply-adds M*K*N in numpy 2.4's build).
# On a busy machine a woken pool waits for cores: measured on a loaded 2-core
# machine, a 256x64x64 product took 7 ms in the pool and 0.04 ms on one thread.
# So by default float products run as row blocks of at most BLOCK_PRODUCT
# multiply-adds, each on the calling thread; ``blas_threads=True`` hands large
# products to the pool whole (faster on an idle multi-core machine).
BLOCK_PRODUCT = 1 << 19


class ExecutorFileError(HostError):
    """The executor files are missing, corrupt, or describe a layer this host code cannot run."""


# -- integer datatypes -------------------------------------------------------------------


def int_range(name: str) -> tuple[int, int]:
    """(min, max) of a FINN integer datatype name (host.datatypes: BIPOLAR, BINARY, INTn, UINTn, n <= 64)."""
    try:
        return datatypes.int_range(name)
    except IOSpecError:
        raise ExecutorFileError(f"datatype {name!r} is not an integer datatype the executor runs "
                                "(BIPOLAR, BINARY, INTn, UINTn up to 64 bits); re-export the design") from None


def bitwidth(name: str) -> int:
    """Bits of a FINN integer datatype (1 for BIPOLAR and BINARY)."""
    int_range(name)  # refuses other names
    return datatypes.parse(name).bitwidth


def container(lo: int, hi: int) -> np.dtype:
    """Smallest numpy integer dtype holding every value in [lo, hi]."""
    kinds = ("uint8", "uint16", "uint32", "uint64") if lo >= 0 else ("int8", "int16", "int32", "int64")
    for kind in kinds:
        info = np.iinfo(kind)
        if info.min <= lo and hi <= info.max:
            return np.dtype(kind)
    raise ExecutorFileError(f"no numpy integer type holds [{lo}, {hi}]")


def accumulator_dtype(bound: int) -> np.dtype:
    """The arithmetic for an integer dot product whose partial sums stay within [-bound, bound].

    float32 when ``bound < 2**24``: every operand, product and partial sum is
    then an integer of magnitude below 2**24, each of which float32 represents
    exactly, so every multiply and add that BLAS performs (in any order,
    fused or not) is exact and the result is the integer dot product. The
    bound covers every summation order because it is the sum of the terms'
    magnitudes. Thresholds compared against the result are clipped to
    [-bound, bound + 1], also exact. Otherwise int32 when that range fits,
    else int64 (numpy's integer matmul: exact, slower).
    """
    if bound < FLOAT32_EXACT:
        return np.dtype(np.float32)
    if bound < INT32_MAX:
        return np.dtype(np.int32)
    if bound < INT64_MAX:
        return np.dtype(np.int64)
    raise ExecutorFileError(f"accumulator bound {bound} exceeds int64; the executor cannot run this layer")


def matmul(x: np.ndarray, w: np.ndarray, blas_threads: bool = False) -> np.ndarray:
    """x (M, K) @ w (K, N), both of w's dtype; float products in single-thread row blocks
    unless ``blas_threads`` (integer products never reach BLAS)."""
    (m, k), n = x.shape, w.shape[1]
    if blas_threads or w.dtype != np.float32 or m * k * n <= BLOCK_PRODUCT:
        return np.matmul(x, w)
    rows = max(1, BLOCK_PRODUCT // (k * n))
    out = np.empty((m, n), w.dtype)
    for start in range(0, m, rows):
        np.matmul(x[start:start + rows], w, out=out[start:start + rows])
    return out


# -- the layer registry ------------------------------------------------------------------

LAYERS: dict[str, type] = {}


def register(cls):
    """Class decorator: make ``cls`` the executor of layers whose ``kind`` is ``cls.kind``."""
    LAYERS[cls.kind] = cls
    return cls


class Layer:
    """One dataflow layer: ``__call__`` maps (N, *input_shape) to (N, *output_shape)."""

    kind = ""
    blas_threads = False  # see BLOCK_PRODUCT; Executor sets it

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray]):
        self.spec = spec
        self.name = spec["name"]
        self.input_shape = tuple(spec["input_shape"])
        self.output_shape = tuple(spec["output_shape"])
        self.input_range = int_range(spec["input_datatype"])
        self.output_range = int_range(spec["output_datatype"])
        self.out_dtype = container(*self.output_range)
        self.attrs = spec.get("attrs", {})
        self.arrays = arrays

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def attr(self, key: str):
        if key not in self.attrs:
            raise ExecutorFileError(f"layer {self.name} ({self.kind}) lacks attribute {key!r}; re-export the design")
        return self.attrs[key]

    def array(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ExecutorFileError(f"layer {self.name} ({self.kind}) lacks array {key!r} in {NPZ_NAME}; "
                                    "re-export the design")
        return self.arrays[key]

    def check_output_range(self, lo: int, hi: int) -> None:
        """Refuse a layer whose computed values [lo, hi] overflow its declared output datatype."""
        if lo < self.output_range[0] or hi > self.output_range[1]:
            raise ExecutorFileError(f"layer {self.name} computes values in [{lo}, {hi}] but declares "
                                    f"{self.spec['output_datatype']}; re-export the design")


class ThresholdCount:
    """FINN's MultiThreshold on channels-last data: per channel, how many thresholds ``x >= t``.

    Thresholds (C or 1, S) are integers, clipped to [lo, hi + 1] for inputs in
    [lo, hi] (the same count for every such input) and held in ``dtype``, the
    arithmetic the input arrives in (None: the smallest integer type holding
    them, so that UINT8 inputs compare as uint8 unless a threshold is 256).
    Integer inputs of at most LUT_LEVELS values against LUT_MIN_STEPS or more
    thresholds look their count up in a table built by the same comparisons.
    """

    LUT_LEVELS = 4096
    LUT_MIN_STEPS = 4

    def __init__(self, thresholds: np.ndarray, lo: int, hi: int, dtype: np.dtype | None = None):
        t = np.clip(np.asarray(thresholds, dtype=np.int64), lo, hi + 1)
        if t.ndim != 2:
            raise ExecutorFileError(f"thresholds must be (channels, steps), got shape {t.shape}")
        if dtype is None:
            dtype = container(min(lo, int(t.min(initial=lo))), max(hi, int(t.max(initial=hi))))
        self.rows = np.ascontiguousarray(t.T.astype(dtype))  # (S, C or 1)
        self.steps = t.shape[1]
        self.count_dtype = container(0, self.steps)
        self.lo, self.table = lo, None
        if np.dtype(dtype).kind in "iu" and hi - lo < self.LUT_LEVELS and self.steps >= self.LUT_MIN_STEPS:
            levels = np.arange(lo, hi + 1, dtype=np.int64)[:, None]  # (L, 1): every possible input
            self.table = np.ascontiguousarray(self._compare(levels).T)  # (C or 1, L) counts

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (..., C) -> (..., C) counts
        if self.table is None:
            return self._compare(x)
        index = x.astype(np.intp) - self.lo  # in [0, L): every layer's input is in its datatype's range
        if len(self.table) > 1:
            index += np.arange(len(self.table)) * self.table.shape[1]  # channel c reads row c
        return np.take(self.table, index, mode="clip")  # clip: never outside the table's memory

    def _compare(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(self.rows.dtype, copy=False)
        if self.steps == 0:
            return np.zeros(x.shape, self.count_dtype)
        count = (x >= self.rows[0]).view(np.uint8).astype(self.count_dtype, copy=False)  # bool is one byte
        for row in self.rows[1:]:
            np.add(count, x >= row, out=count, casting="unsafe")
        return count


# -- matrix-vector-activation unit --------------------------------------------------------


@register
class MVAU(Layer):
    """FINN's MVAU: (..., MW) @ (MW, MH), then thresholds (unless noActivation).

    As FINN's ``execute_node``: with binaryXnorMode, the XNOR-popcount of
    BINARY activations x and BINARY weights w, the number of positions where
    they agree; with BIPOLAR activations and BIPOLAR weights, the same count
    for their {0, 1} codes; otherwise the integer product. Activation: count of
    thresholds passed, then ``2 * count - 1`` for a BIPOLAR output, else
    ``count + ActVal``.

    The popcount is one matrix product plus a per-column offset, for x in {0, 1}:
    ``sum_k [x_k == w_k] = sum_k x_k (2 w_k - 1) + sum_k (1 - w_k)``; its
    partial sums stay within [-MW, MW]. Activation layers fold the offset into
    their thresholds.
    """

    kind = "MVAU"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        w = np.asarray(self.array("weights"), dtype=np.int64)  # (MW, MH)
        self.mw, self.mh = w.shape
        self.bipolar_input = False
        if self._popcount_mode(w):
            codes = w if self.attr("binaryXnorMode") else (w + 1) // 2  # weight codes in {0, 1}
            self.bipolar_input = not self.attr("binaryXnorMode")  # x in {-1, 1} -> codes (x + 1) / 2
            w, offset = 2 * codes - 1, (1 - codes).sum(axis=0)  # (MW, MH) in {-1, 1}; (MH,)
            bound, acc_lo, acc_hi = self.mw, 0, self.mw  # |x @ w| <= MW; popcount in [0, MW]
        else:
            x_abs = max(abs(v) for v in self.input_range)
            bound = int(np.abs(w).sum(axis=0).max(initial=0)) * x_abs  # max over columns of sum |w x|
            offset, acc_lo, acc_hi = np.zeros(self.mh, np.int64), -bound, bound
        self.acc = accumulator_dtype(bound)
        self.weights = np.ascontiguousarray(w.astype(self.acc))  # (MW, MH)
        self.offset = offset.astype(self.acc)  # (MH,)
        self.add_offset = bool(offset.any())
        self.activation = None if self.attr("noActivation") else self._activation(acc_lo, acc_hi, offset)
        if self.activation is None:
            self.check_output_range(acc_lo, acc_hi)

    def _popcount_mode(self, w: np.ndarray) -> bool:
        idt, wdt = self.spec["input_datatype"], self.attr("weightDataType")
        if self.attr("binaryXnorMode"):
            if idt != "BINARY" or not np.isin(w, (0, 1)).all():
                raise ExecutorFileError(f"layer {self.name}: binaryXnorMode needs BINARY activations and "
                                        f"weights (got {idt} activations); re-export the design")
            return True
        if idt == "BIPOLAR" and wdt == "BIPOLAR":
            if not np.isin(w, (-1, 1)).all():
                raise ExecutorFileError(f"layer {self.name}: BIPOLAR weights hold other values")
            return True
        return False

    def _activation(self, acc_lo: int, acc_hi: int, offset: np.ndarray):
        t = np.clip(np.asarray(self.array("thresholds"), dtype=np.int64), acc_lo, acc_hi + 1)
        t = np.broadcast_to(t, (self.mh, t.shape[1])) - offset[:, None]  # compare before the offset
        thresholds = ThresholdCount(t, acc_lo - int(offset.max(initial=0)), acc_hi + 1, self.acc)
        bipolar = self.spec["output_datatype"] == "BIPOLAR"
        scale, bias = (2, -1) if bipolar else (1, int(self.attr("ActVal")))
        self.check_output_range(bias, bias + scale * thresholds.steps)
        return thresholds, scale, bias

    def __call__(self, x):
        n = x.shape[0]
        flat = x.reshape(-1, self.mw)
        if self.bipolar_input:
            flat = (flat.astype(np.int8) + 1) >> 1  # {-1, 1} -> {0, 1}
        acc = matmul(flat.astype(self.acc, copy=False), self.weights, self.blas_threads)  # (rows, MH), exact
        if self.activation is None:
            if self.add_offset:
                acc += self.offset
            return acc.astype(self.out_dtype).reshape(n, *self.output_shape)
        thresholds, scale, bias = self.activation
        return _scale_bias(thresholds(acc), scale, bias, self.out_dtype).reshape(n, *self.output_shape)


def _scale_bias(count: np.ndarray, scale: int, bias: int, dtype: np.dtype) -> np.ndarray:
    """``scale * count + bias`` in ``dtype`` (in range: checked at load)."""
    out = count.astype(dtype, copy=False)
    if scale != 1:
        out *= dtype.type(scale)
    if bias:
        out += np.array(bias).astype(dtype)
    return out


# -- standalone thresholding ---------------------------------------------------------------


@register
class Thresholding(Layer):
    """FINN's Thresholding: ``count + ActVal`` per channel (last axis); BIPOLAR output ``2 * that - 1``."""

    kind = "Thresholding"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        self.thresholds = ThresholdCount(self.array("thresholds"), *self.input_range)
        bias = int(self.attr("ActVal"))
        if spec["output_datatype"] == "BIPOLAR":  # FINN: y = 2 * (count + ActVal) - 1
            self.scale, self.bias = 2, 2 * bias - 1
        else:
            self.scale, self.bias = 1, bias
        self.check_output_range(self.bias, self.bias + self.scale * self.thresholds.steps)

    def __call__(self, x):
        return _scale_bias(self.thresholds(x), self.scale, self.bias, self.out_dtype)


# -- the input quantiser on the host -----------------------------------------------------


class InputQuantiser:
    """The input Thresholding layer a build moved off the accelerator (``flows build --input-quant
    host``), run by the host: raw pixels in, the accelerator's narrow input datatype out.

    It is the executor's `Thresholding` layer (the same counting of ``x >= t`` per channel on the
    last axis, the same ``ActVal`` bias, ``2 * count - 1`` for BIPOLAR), so host and executor
    cannot disagree. JSON form (io_spec.json ``input_quantiser``, executor.json ``host_input``)::

        {"raw_datatype": "UINT8", "datatype": "UINT2", "ActVal": 0, "thresholds": [[43, 128, 213]]}

    ``thresholds``: integers, (channels or 1, steps), for raw inputs in ``raw_datatype``.
    """

    def __init__(self, raw_datatype: str, datatype: str, act_val: int, thresholds) -> None:
        t = np.asarray(thresholds)
        if t.ndim != 2 or t.dtype.kind not in "iu":
            raise ExecutorFileError(f"input quantiser thresholds must be integers (channels, steps), got "
                                    f"{t.dtype} {t.shape}; rebuild the package")
        spec = {"name": "host_input_quantiser", "input_datatype": raw_datatype, "output_datatype": datatype,
                "input_shape": [t.shape[0]], "output_shape": [t.shape[0]], "attrs": {"ActVal": int(act_val)}}
        self.layer = Thresholding(spec, {"thresholds": t})
        self.raw_datatype, self.datatype, self.act_val = raw_datatype, datatype, int(act_val)
        self.thresholds = t
        self.raw_range = int_range(raw_datatype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, ..., C) raw integers within ``raw_datatype`` -> the same shape in ``datatype``'s container."""
        x = np.asarray(x)
        lo, hi = self.raw_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise IOSpecError(f"input values span [{x.min()}, {x.max()}], outside the raw {self.raw_datatype} "
                              f"[{lo}, {hi}] the input quantiser takes")
        if len(self.thresholds) > 1 and (x.ndim < 2 or x.shape[-1] != len(self.thresholds)):
            raise IOSpecError(f"input of shape {x.shape} has no last axis of {len(self.thresholds)} channels "
                              "for the per-channel input quantiser; lay it out as the accelerator takes it")
        return self.layer(x.astype(container(lo, hi), copy=False))

    @classmethod
    def from_dict(cls, raw: dict) -> InputQuantiser:
        try:
            return cls(raw["raw_datatype"], raw["datatype"], raw["ActVal"], np.asarray(raw["thresholds"], np.int64))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExecutorFileError(f"input quantiser is incomplete ({type(exc).__name__}: {exc}); "
                                    "rebuild the package") from None

    def to_dict(self) -> dict:
        return {"raw_datatype": self.raw_datatype, "datatype": self.datatype, "ActVal": self.act_val,
                "thresholds": self.thresholds.astype(np.int64).tolist()}


# -- label select --------------------------------------------------------------------------


@register
class LabelSelect(Layer):
    """FINN's LabelSelect: indices of the K largest values, largest first.

    Ties go to the lower index, as the ONNX TopK that FINN's ``execute_node``
    runs orders them (a stable sort of the negated values).
    """

    kind = "LabelSelect"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        self.k = int(self.attr("K"))
        labels = int(self.attr("Labels"))
        if self.input_range[1] > INT64_MAX:
            raise ExecutorFileError(f"layer {self.name}: {spec['input_datatype']} labels exceed int64")
        self.check_output_range(0, labels - 1)

    def __call__(self, x):
        n = x.shape[0]
        v = x.reshape(n, -1)
        if self.k == 1:
            top = np.argmax(v, axis=1)[:, None]  # first maximum: the lowest index among ties
        else:
            top = np.argsort(-v.astype(np.int64), axis=1, kind="stable")[:, : self.k]
        return top.astype(self.out_dtype).reshape(n, *self.output_shape)


# -- convolution building blocks (NHWC) ----------------------------------------------------


@register
class ConvolutionInputGenerator(Layer):
    """FINN's sliding window (im2col): (N, H, W, C) -> (N, OH, OW, KH * KW * C), ordered (kh, kw, c)."""

    kind = "ConvolutionInputGenerator"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        self.kernel = tuple(self.attr("ConvKernelDim"))
        self.stride = tuple(self.attr("Stride"))
        self.dilation = tuple(self.attr("Dilation"))
        self.check_output_range(*self.input_range)

    def __call__(self, x):
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        x = np.ascontiguousarray(x)
        bn, bh, bw, bc = x.strides
        windows = np.lib.stride_tricks.as_strided(
            x, shape=(n, oh, ow, kh, kw, c), strides=(bn, bh * sh, bw * sw, bh * dh, bw * dw, bc), writeable=False)
        return windows.reshape(n, oh, ow, kh * kw * c).astype(self.out_dtype)  # reshape copies


@register
class FMPadding(Layer):
    """FINN's FMPadding: zeros around (N, H, W, C); Padding = [top, left, bottom, right]."""

    kind = "FMPadding"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        self.pad = tuple(int(p) for p in self.attr("Padding"))
        self.check_output_range(min(0, self.input_range[0]), max(0, self.input_range[1]))

    def __call__(self, x):
        top, left, bottom, right = self.pad
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).astype(self.out_dtype, copy=False)


@register
class Pool(Layer):
    """FINN's Pool on im2col windows (N, OH, OW, K * C) -> (N, OH, OW, C): MaxPool, AccPool, QuantAvgPool."""

    kind = "Pool"

    def __init__(self, spec, arrays):
        super().__init__(spec, arrays)
        self.function = self.attr("Function")
        self.window = int(np.prod(self.attr("KernelSize")))
        self.channels = int(self.attr("Channels"))
        lo, hi = self.input_range
        if self.function == "MaxPool":
            self.check_output_range(lo, hi)
        elif self.function in ("AccPool", "QuantAvgPool"):
            self.shift = self._shift() if self.function == "QuantAvgPool" else 0
            self.check_output_range((self.window * lo) >> self.shift, (self.window * hi) >> self.shift)
        else:
            raise ExecutorFileError(f"layer {self.name}: Pool function {self.function!r} is not integer "
                                    "arithmetic the executor runs (MaxPool, AccPool, QuantAvgPool)")

    def _shift(self) -> int:
        """As FINN: the bits of the largest window sum of 2**ibits - 1 values, beyond obits."""
        ibits, obits = bitwidth(self.spec["input_datatype"]), bitwidth(self.spec["output_datatype"])
        return max(0, int((2**ibits - 1) * self.window).bit_length() - obits)

    def __call__(self, x):
        windows = x.reshape(*x.shape[:-1], self.window, self.channels)
        if self.function == "MaxPool":
            return windows.max(axis=-2).astype(self.out_dtype)
        total = windows.astype(np.int64).sum(axis=-2)
        return (total >> self.shift).astype(self.out_dtype)


# -- the executor --------------------------------------------------------------------------


@dataclass
class LayerTrace:
    """One layer of one `Executor.run`: its output for the batch and its wall time."""

    name: str
    kind: str
    output: np.ndarray  # (N, *output_shape)
    seconds: float


class Executor:
    """A dataflow design loaded from executor.json + executor.npz, run batched in numpy.

    ``blas_threads``: let BLAS run large float products on its thread pool
    (default: row blocks on the calling thread, see BLOCK_PRODUCT).
    """

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], blas_threads: bool = False):
        self.meta = meta
        try:
            self.input_datatype = meta["input"]["datatype"]
            self.input_shape = tuple(meta["input"]["shape"])  # per image, no batch axis
            self.output_datatype = meta["output"]["datatype"]
            self.output_shape = tuple(meta["output"]["shape"])
            self.layers = [_make_layer(spec, arrays) for spec in meta["layers"]]
        except (KeyError, TypeError) as exc:
            raise ExecutorFileError(f"{JSON_NAME} is incomplete ({type(exc).__name__}: {exc}); "
                                    "re-export the design") from None
        # the accelerator's own input port; with a host input quantiser, `run` takes raw values
        self.stream_datatype, self.stream_range = self.input_datatype, int_range(self.input_datatype)
        self.host_input = InputQuantiser.from_dict(meta["host_input"]) if meta.get("host_input") else None
        if self.host_input is not None:
            if self.host_input.datatype != self.stream_datatype:
                raise ExecutorFileError(f"{JSON_NAME}: the host input quantiser gives {self.host_input.datatype} "
                                        f"but the design takes {self.stream_datatype}; re-export the design")
            self.input_datatype = self.host_input.raw_datatype
        self.input_range = int_range(self.input_datatype)
        for layer in self.layers:
            layer.blas_threads = blas_threads

    @classmethod
    def load(cls, directory: str | Path, blas_threads: bool = False) -> "Executor":
        meta, arrays = read_files(directory)
        return cls(meta, arrays, blas_threads)

    def run(self, x: np.ndarray, return_layers: bool = False):
        """Outputs (N, *output_shape) for inputs (N, *input_shape) of integers (raw values where
        the design quantises its input on the host: ``host_input``).

        With ``return_layers``: ``(outputs, [LayerTrace, ...])``, one trace per
        layer in order, holding its output and wall time.
        """
        x = self.check_input(x)
        if self.host_input is None:
            return self.run_stream(x, return_layers)
        start = time.perf_counter()
        x = self.host_input(x)
        if not return_layers:
            return self.run_stream(x)
        quantised = LayerTrace("host_input_quantiser", "Thresholding (host)", x, time.perf_counter() - start)
        y, trace = self.run_stream(x, True)
        return y, [quantised, *trace]

    def run_stream(self, x: np.ndarray, return_layers: bool = False):
        """As `run`, from the accelerator's input port: integers of ``stream_datatype`` (already
        quantised on the host where the design has a host input quantiser)."""
        if not return_layers:
            for layer in self.layers:
                x = layer(x)
            return x
        trace = []
        for layer in self.layers:
            start = time.perf_counter()
            x = layer(x)
            trace.append(LayerTrace(layer.name, layer.kind, x, time.perf_counter() - start))
        return x, trace

    def check_input(self, x) -> np.ndarray:
        """The batch as integers in the input datatype's container; IOSpecError when it is not one."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise IOSpecError(f"executor input must be (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {x.shape}; reshape the batch")
        lo, hi = self.input_range
        if x.dtype.kind not in "biuf":
            raise IOSpecError(f"executor input has dtype {x.dtype}; give integers ({self.input_datatype}) "
                              "as a numeric array")
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x) | (x != np.round(x))
            if bad.any():
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                raise IOSpecError(f"executor input value {x[at]} at index {at} is not an integer of "
                                  f"{self.input_datatype} [{lo}, {hi}]; quantise the images first")
            x = x.astype(np.int64)
        if x.size and not (np.iinfo(x.dtype).min >= lo and np.iinfo(x.dtype).max <= hi):
            if x.min() < lo or x.max() > hi:
                raise IOSpecError(f"executor input values span [{x.min()}, {x.max()}], outside "
                                  f"{self.input_datatype} [{lo}, {hi}]")
        return x.astype(container(lo, hi), copy=False)

    def describe(self) -> list[dict]:
        """One line of facts per layer: name, kind, shapes, datatypes, folding."""
        keys = ("name", "kind", "op_type", "input_datatype", "output_datatype", "input_shape", "output_shape",
                "folding")
        return [{k: spec.get(k) for k in keys} for spec in self.meta["layers"]]


def _make_layer(spec: dict, arrays: dict[str, np.ndarray]) -> Layer:
    cls = LAYERS.get(spec.get("kind"))
    if cls is None:
        raise ExecutorFileError(f"layer {spec.get('name')!r} is a {spec.get('kind')!r}, which this executor "
                                f"cannot run (it runs {', '.join(sorted(LAYERS))}); update the host code")
    own = {key: arrays[ref] for key, ref in spec.get("arrays", {}).items() if ref in arrays}
    missing = set(spec.get("arrays", {}).values()) - set(arrays)
    if missing:
        raise ExecutorFileError(f"{NPZ_NAME} lacks {', '.join(sorted(missing))} for layer {spec['name']}; "
                                "re-export the design")
    return cls(spec, own)


def read_files(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """executor.json (format checked first) and the arrays of executor.npz."""
    directory = Path(directory)
    meta = read_versioned_json(directory / JSON_NAME, FORMAT, ExecutorFileError,
                               "the deploy package's executor/ folder holds it", "re-export the design",
                               "rebuild the package with the matching qnn-flows, or update host/")
    arrays = read_npz(directory / NPZ_NAME, None, ExecutorFileError, "re-export the design (or copy the package again)")
    return meta, arrays


def load(directory: str | Path, blas_threads: bool = False) -> Executor:
    """The executor of the design in ``directory`` (executor.json + executor.npz)."""
    return Executor.load(directory, blas_threads)

