"""host.packing against golden bytes from a plain reference loop, without
finn: runs in the board env (numpy 1.21, Python 3.10) and the main venv.

The reference follows FINN's definition with reverse_inner=True and
reverse_endian=True literally: reverse the innermost values, concatenate
their bit patterns MSB first, left-pad to whole bytes, write big-endian,
then reverse the bytes.
"""

import numpy as np
import pytest

from host.datatypes import parse
from host.errors import IOSpecError
from host.packing import pack, packed_shape, unpack

DTYPES = [
    "BIPOLAR",
    "BINARY",
    "UINT2",
    "UINT3",
    "UINT4",
    "UINT8",
    "INT2",
    "INT4",
    "INT5",
    "INT8",
    "INT16",
    "UINT17",
    "INT24",
    "INT32",
    "UINT33",
    "INT40",
    "FIXED<8,4>",
]
SHAPES = [(1, 4, 8), (3, 2, 5), (2, 3, 1, 7), (4, 13), (2, 1)]


def reference_pack(values, dtype):
    """One row of values -> bytes, value by value, as FINN defines it."""
    dt = parse(dtype)
    nbytes = -(-len(values) * dt.bitwidth // 8)
    bits = ""
    for v in reversed(list(values)):  # reverse_inner
        if dt.is_bipolar:
            code = (int(v) + 1) // 2
        else:
            code = int(round(float(v) / dt.scale)) % (1 << dt.bitwidth)
        bits += format(code, f"0{dt.bitwidth}b")
    word = int(bits, 2).to_bytes(nbytes, "big")
    return list(reversed(word))  # reverse_endian


def reference_pack_array(x, dtype):
    rows = x.reshape(-1, x.shape[-1])
    out = [reference_pack(row, dtype) for row in rows]
    return np.array(out, dtype=np.uint8).reshape(x.shape[:-1] + (-1,))


def random_values(dtype, shape, seed):
    dt = parse(dtype)
    rng = np.random.default_rng(seed)
    if dt.is_bipolar:
        return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)
    lo, hi = int(round(dt.min / dt.scale)), int(round(dt.max / dt.scale))
    codes = rng.integers(lo, hi, size=shape, dtype=np.int64, endpoint=True)
    codes.flat[0], codes.flat[-1] = lo, hi  # both ends of the range
    if dt.is_fixed:
        return (codes * dt.scale).astype(dt.value_dtype)
    return codes.astype(dt.value_dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_matches_reference_and_round_trips(dtype, shape):
    x = random_values(dtype, shape, seed=len(shape) * 100 + parse(dtype).bitwidth)
    packed = pack(x, dtype, shape)
    assert packed.dtype == np.uint8 and packed.shape == packed_shape(shape, dtype)
    np.testing.assert_array_equal(packed, reference_pack_array(x, dtype))
    back = unpack(packed, dtype, shape)
    assert back.dtype == parse(dtype).value_dtype
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize(
    "dtype, values, golden",
    [
        ("BINARY", [1, 1, 1, 0], [0x07]),
        ("BIPOLAR", [-1, 1, 1], [0x06]),
        ("UINT4", [1, 2, 3], [0x21, 0x03]),
        ("INT4", [-1, 2], [0x2F]),
        ("UINT2", [3, 0, 1, 2, 3], [0x93, 0x03]),
        ("INT16", [-2, 258], [0xFE, 0xFF, 0x02, 0x01]),
        ("INT3", [-4, 3, -1], [0xDC, 0x01]),
    ],
)
def test_known_bytes(dtype, values, golden):
    x = np.array([values])
    assert pack(x, dtype, x.shape).tolist() == [golden]
    assert unpack(np.array([golden], dtype=np.uint8), dtype, x.shape).tolist() == [values]


def test_out_of_range_and_bad_shape_raise():
    with pytest.raises(IOSpecError, match="outside INT4"):
        pack(np.array([[8]]), "INT4", (1, 1))
    with pytest.raises(IOSpecError, match="shape"):
        pack(np.zeros((2, 3)), "INT4", (2, 4))
