"""Pack integer tensors into the byte buffers FINN's IO DMAs move, and back.

Byte-identical to FINN's ``finnpy_to_packed_bytearray`` and
``packed_bytearray_to_finnpy`` (``finn/util/data_packing.py``) with
``reverse_inner=True, reverse_endian=True``, the setting FINN's PYNQ driver
uses.  With both reversals the layout is plain little-endian: the innermost
dimension of k values of b bits is the integer ``sum(code[j] << (j * b))``,
written as ceil(k * b / 8) little-endian bytes (padding bits are zero).

Shapes follow FINN's driver::

    folded (N, ..., fold, elems_per_fold)  ->  packed (N, ..., fold, bytes)

numpy only and vectorised (no per-value Python loops), for Python 3.10 with
numpy 1.21 as well as numpy 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from host.datatypes import DataType, as_datatype
from host.errors import IOSpecError

Shape = Sequence[int]


def packed_shape(folded_shape: Shape, dtype: DataType | str) -> tuple[int, ...]:
    """Packed byte shape for a folded shape: the innermost dim becomes bytes."""
    shape = _check_shape(folded_shape, "folded shape")
    bits = shape[-1] * as_datatype(dtype).bitwidth
    return shape[:-1] + ((bits + 7) // 8,)


def pack(x: np.ndarray, dtype: DataType | str, folded_shape: Shape) -> np.ndarray:
    """Pack ``x`` (exactly ``folded_shape``) into a C-contiguous uint8 array
    of ``packed_shape(folded_shape, dtype)``.

    ``x`` may hold integers, bools or floats with integral values (FINN's
    float containers); for FIXED<w,i>, multiples of 2**-(w-i).  Raises
    IOSpecError for a wrong shape, a non-numeric dtype, non-integral values
    or values outside the datatype's range.
    """
    dt = as_datatype(dtype)
    shape = _check_shape(folded_shape, "folded shape")
    x = np.asarray(x)
    if x.shape != shape:
        raise IOSpecError(
            f"data has shape {x.shape} but the folded shape is {shape}; "
            "reshape the data to the accelerator's folded shape"
        )
    return _pack_codes(_encode(x, dt), dt.bitwidth)


def unpack(buf: np.ndarray, dtype: DataType | str, folded_shape: Shape) -> np.ndarray:
    """Unpack a uint8 buffer of ``packed_shape(folded_shape, dtype)`` into
    values of ``folded_shape``, in ``dtype``'s exact container
    (int8/16/32, uint8/16/32; float32/64 for FIXED)."""
    dt = as_datatype(dtype)
    shape = _check_shape(folded_shape, "folded shape")
    want = packed_shape(shape, dt)
    buf = np.asarray(buf)
    if buf.dtype != np.uint8 or buf.shape != want:
        raise IOSpecError(
            f"packed buffer is {buf.dtype} {buf.shape} but {dt} in folded shape {shape} "
            f"packs to uint8 {want}; pass the buffer the accelerator wrote for this spec"
        )
    codes = _unpack_codes(buf, dt.bitwidth, shape[-1], dt.code_dtype)
    return np.ascontiguousarray(_decode(codes, dt))


# -- validation ------------------------------------------------------------


def _check_shape(shape: Shape, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise IOSpecError(
            f"{what} {shape!r} is not a sequence of integers; give e.g. (1, 49, 16)"
        ) from None
    if not dims or min(dims) < 1:
        raise IOSpecError(f"{what} {dims} must have at least one dim, all >= 1; fix the IO spec")
    return dims


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True in mask, for error messages."""
    return tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(mask)[0]), mask.shape))


def check_values(x: np.ndarray, dtype: DataType | str, what: str = "data") -> None:
    """Raise IOSpecError unless x holds only values of dtype (indices in
    messages are x's own); pack() runs the same check."""
    _integral(np.asarray(x), as_datatype(dtype), what)


def _integral(x: np.ndarray, dt: DataType, what: str) -> np.ndarray:
    """x as integer-valued codes-to-be (FIXED scaled by 2**frac_bits), after
    type, integrality and range checks."""
    if x.dtype.kind not in "biuf":
        raise IOSpecError(
            f"{what} has dtype {x.dtype}; give integers (or integral floats) for {dt}"
        )
    ints = x.astype(np.float64) / dt.scale if dt.is_fixed else x
    if ints.dtype.kind == "f":
        bad = ~np.isfinite(ints) | (ints != np.round(ints))
        if bad.any():
            at = _first_bad(bad)
            raise IOSpecError(
                f"{what} value {x[at]} at index {at} is not representable in {dt}; "
                "quantise it first"
            )
    lo, hi = dt.min / dt.scale, dt.max / dt.scale
    if ints.size and (ints.min() < lo or ints.max() > hi or (dt.is_bipolar and (ints == 0).any())):
        bad = (ints < lo) | (ints > hi)
        if dt.is_bipolar:
            bad |= ints == 0
        at = _first_bad(bad)
        allowed = "{-1, +1}" if dt.is_bipolar else f"[{dt.min}, {dt.max}]"
        raise IOSpecError(
            f"{what} value {x[at]} at index {at} is outside {dt} {allowed}; clip or requantise it"
        )
    return ints


# -- codes <-> values --------------------------------------------------------


def _encode(x: np.ndarray, dt: DataType) -> np.ndarray:
    """Values -> unsigned codes (low ``bitwidth`` bits, two's complement)."""
    x = _integral(x, dt, "data")
    if dt.is_bipolar:
        return (x > 0).astype(np.uint8)
    if x.dtype.kind == "f":
        x = x.astype(np.int64)
    mask = dt.code_dtype.type((1 << dt.bitwidth) - 1)
    # integer casts keep the low bits, which is the two's complement code
    return x.astype(dt.code_dtype) & mask


def _decode(codes: np.ndarray, dt: DataType) -> np.ndarray:
    """Unsigned codes -> values in dt.value_dtype."""
    if dt.is_bipolar:
        return codes.astype(np.int8) * np.int8(2) - np.int8(1)
    if not dt.signed:
        return codes
    spare = 8 * codes.dtype.itemsize - dt.bitwidth
    signed = np.dtype(f"int{8 * codes.dtype.itemsize}")
    shift = codes.dtype.type(spare)
    # sign-extend: move the sign bit to the top, then shift back arithmetically
    values = (codes << shift).view(signed) >> signed.type(spare)
    if dt.is_fixed:
        return values.astype(dt.value_dtype) * dt.value_dtype.type(dt.scale)
    return values


# -- codes <-> bytes ---------------------------------------------------------


def _pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., k) codes -> (..., ceil(k*bits/8)) little-endian uint8."""
    lead, k = codes.shape[:-1], codes.shape[-1]
    if bits == 8 * codes.dtype.itemsize:  # whole bytes: the codes' own bytes
        le = np.ascontiguousarray(codes, dtype=codes.dtype.newbyteorder("<"))
        return le.view(np.uint8).reshape(lead + (k * bits // 8,))
    if bits == 1:
        return _packbits_rows(codes)
    if bits in (2, 4):  # 8 // bits codes per byte, lane j of a byte at bit j * bits
        per = 8 // bits
        padded = np.zeros(lead + (-(-k // per), per), dtype=np.uint8)
        padded.reshape(lead + (-1,))[..., :k] = codes
        out = padded[..., 0].copy()
        for lane in range(1, per):  # a loop over bit lanes, not over values
            out |= padded[..., lane] << np.uint8(lane * bits)
        return out
    # any width: one bit stream, code j's bit b at stream position j * bits + b
    stream = np.empty(lead + (k, bits), dtype=np.uint8)
    for b in range(bits):  # a loop over bit positions, not over values
        stream[..., b] = (codes >> codes.dtype.type(b)) & codes.dtype.type(1)
    return _packbits_rows(stream.reshape(lead + (k * bits,)))


def _unpack_codes(buf: np.ndarray, bits: int, k: int, code_dtype: np.dtype) -> np.ndarray:
    """(..., nbytes) little-endian uint8 -> (..., k) codes in code_dtype."""
    lead = buf.shape[:-1]
    if bits == 8 * code_dtype.itemsize:
        le = np.ascontiguousarray(buf).view(code_dtype.newbyteorder("<"))
        return le.astype(code_dtype)
    if bits in (2, 4):
        per, mask = 8 // bits, np.uint8((1 << bits) - 1)
        lanes = np.empty(buf.shape + (per,), dtype=np.uint8)
        for lane in range(per):
            lanes[..., lane] = (buf >> np.uint8(lane * bits)) & mask
        return np.ascontiguousarray(lanes.reshape(lead + (-1,))[..., :k])
    stream = _unpackbits_rows(buf, k * bits).reshape(lead + (k, bits))
    if bits == 1:
        return stream[..., 0]
    codes = stream[..., 0].astype(code_dtype)
    for b in range(1, bits):
        codes |= stream[..., b].astype(code_dtype) << code_dtype.type(b)
    return codes


def _packbits_rows(stream: np.ndarray) -> np.ndarray:
    """Pack each row of bits (last axis, LSB first) into bytes, zero-padding
    the last byte of a row.  Whole-byte rows go through one flat call,
    which is much faster than numpy's per-row path."""
    nbits = stream.shape[-1]
    if nbits % 8:
        return np.packbits(stream, axis=-1, bitorder="little")
    flat = np.packbits(np.ascontiguousarray(stream).reshape(-1), bitorder="little")
    return flat.reshape(stream.shape[:-1] + (nbits // 8,))


def _unpackbits_rows(buf: np.ndarray, nbits: int) -> np.ndarray:
    """First nbits bits (LSB first) of each row of bytes."""
    if nbits != 8 * buf.shape[-1]:
        return np.unpackbits(buf, axis=-1, count=nbits, bitorder="little")
    flat = np.unpackbits(np.ascontiguousarray(buf).reshape(-1), bitorder="little")
    return flat.reshape(buf.shape[:-1] + (nbits,))


def gather_pixels(images: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    """The kept pixels of a pixel-pruned model: (N, ...) images -> (N, 1, 1, K), pixel ``kept[k]`` of
    each flattened image at k (deploy.json ``kept_pixels``; the host gathers before packing)."""
    images = np.asarray(images)
    flat = images.reshape(len(images), -1)
    idx = np.asarray(kept, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= flat.shape[1])):
        raise IOSpecError(f"kept pixel indices must lie in 0..{flat.shape[1] - 1}")
    return np.ascontiguousarray(flat[:, idx]).reshape(len(images), 1, 1, len(idx))
