"""host.packing is byte-identical to FINN's packing with the setting FINN's
PYNQ driver uses (reverse_inner=True, reverse_endian=True), and unpacks
what FINN packs."""

import numpy as np
import pytest

finn_packing = pytest.importorskip(
    "finn.util.data_packing", reason="finn-plus is not installed (scripts/setup.sh installs it)"
)
from qonnx.core.datatype import DataType as QonnxDataType  # noqa: E402

from host.datatypes import parse  # noqa: E402
from host.errors import IOSpecError  # noqa: E402
from host.packing import pack, packed_shape, unpack  # noqa: E402

DTYPES = ["BIPOLAR", "BINARY", "UINT2", "UINT4", "UINT8", "INT2", "INT4", "INT8", "INT16", "INT32"]
# folded shapes (N, ..., fold, elems_per_fold); 5, 7 and 13 elements leave
# partial bytes for every sub-byte width above
SHAPES = [(1, 4, 8), (3, 2, 5), (2, 3, 1, 7), (4, 13), (16, 49, 16)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def finn_pack(x, dtype):
    return finn_packing.finnpy_to_packed_bytearray(
        x, QonnxDataType[dtype], reverse_inner=True, reverse_endian=True
    )


def finn_unpack(buf, dtype, shape):
    return finn_packing.packed_bytearray_to_finnpy(
        buf, QonnxDataType[dtype], shape, reverse_inner=True, reverse_endian=True
    )


def random_values(dtype, shape, seed=0):
    """Values of dtype in its exact numpy container, both range ends included."""
    dt = parse(dtype)
    rng = np.random.default_rng(seed)
    if dt.is_bipolar:
        return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)
    x = rng.integers(dt.min, dt.max, size=shape, dtype=np.int64, endpoint=True)
    x.flat[0], x.flat[-1] = dt.min, dt.max
    return x.astype(dt.value_dtype)


def finn_containers(dtype):
    """Containers FINN takes for dtype: float32 (its usual one) where exact,
    and the native integer type, which sends whole-byte types down FINN's
    fast path."""
    bits = parse(dtype).bitwidth
    return (["float32"] if bits <= 24 else []) + (["native"] if bits % 8 == 0 else [])


CASES = [
    pytest.param(dtype, shape, container, id=f"{dtype}-{sid}-{container}")
    for dtype in DTYPES
    for container in finn_containers(dtype)
    for shape, sid in zip(SHAPES, SHAPE_IDS, strict=True)
]


@pytest.mark.parametrize("dtype, shape, container", CASES)
def test_pack_is_byte_identical_to_finn(dtype, shape, container):
    x = random_values(dtype, shape, seed=sum(shape))
    ours = pack(x, dtype, shape)
    theirs = finn_pack(x.astype(np.float32) if container == "float32" else x, dtype)
    assert ours.shape == theirs.shape == packed_shape(shape, dtype)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_through_finn(dtype, shape):
    x = random_values(dtype, shape, seed=len(shape))
    # FINN unpacks our bytes to the values (as float32, FINN's container) ...
    np.testing.assert_array_equal(
        finn_unpack(pack(x, dtype, shape), dtype, shape), x.astype(np.float32)
    )
    # ... and we unpack FINN's bytes exactly, in the datatype's own container
    theirs = np.ascontiguousarray(finn_pack(x, dtype))
    back = unpack(theirs, dtype, shape)
    assert back.dtype == parse(dtype).value_dtype
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("dtype", ["FIXED<8,4>", "FIXED<6,3>"])
def test_fixed_point_matches_finn(dtype):
    dt, shape = parse(dtype), (3, 2, 5)
    codes = np.random.default_rng(1).integers(
        dt.min / dt.scale, dt.max / dt.scale, size=shape, endpoint=True
    )
    x = (codes * dt.scale).astype(np.float32)
    np.testing.assert_array_equal(pack(x, dtype, shape), finn_pack(x, dtype))
    np.testing.assert_array_equal(unpack(pack(x, dtype, shape), dtype, shape), x)


def test_large_batch_round_trips():
    shape = (10000, 49, 16)  # MNIST-sized batch, 16 pixels per fold
    x = random_values("UINT8", shape)
    np.testing.assert_array_equal(unpack(pack(x, "UINT8", shape), "UINT8", shape), x)


@pytest.mark.parametrize(
    "dtype, value", [("UINT4", 16), ("UINT4", -1), ("INT4", -9), ("BIPOLAR", 0), ("BINARY", 2)]
)
def test_out_of_range_value_is_rejected(dtype, value):
    x = np.ones((1, 2, 4), dtype=np.int64)
    x[0, 1, 2] = value
    with pytest.raises(
        IOSpecError, match=rf"value {value} at index \(0, 1, 2\) is outside {dtype}"
    ):
        pack(x, dtype, x.shape)


def test_fractional_and_non_finite_values_are_rejected():
    for bad in (0.5, np.nan, np.inf):
        x = np.zeros((1, 4), dtype=np.float32)
        x[0, 3] = bad
        with pytest.raises(IOSpecError, match=r"index \(0, 3\) is not representable in UINT8"):
            pack(x, "UINT8", x.shape)


def test_integral_floats_are_accepted():
    x = np.array([[0.0, 3.0, -2.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(pack(x, "INT4", x.shape), pack(x.astype(int), "INT4", x.shape))


def test_wrong_shape_and_dtype_are_rejected():
    with pytest.raises(
        IOSpecError, match=r"data has shape \(2, 8\) but the folded shape is \(2, 2, 4\)"
    ):
        pack(np.zeros((2, 8), dtype=np.uint8), "UINT8", (2, 2, 4))
    with pytest.raises(IOSpecError, match="dtype complex"):
        pack(np.zeros((1, 4), dtype=complex), "UINT8", (1, 4))
    with pytest.raises(IOSpecError, match=r"packs to uint8 \(1, 2\)"):
        unpack(np.zeros((1, 3), dtype=np.uint8), "UINT4", (1, 4))
    with pytest.raises(IOSpecError, match="packs to uint8"):
        unpack(np.zeros((1, 2), dtype=np.int8), "UINT4", (1, 4))


@pytest.mark.parametrize("name", ["UINT0", "INT65", "TERNARY", "FLOAT32", "FIXED<4,4>", "FIXED<40,8>", "uint8x"])
def test_unknown_datatype_is_rejected(name):
    with pytest.raises(IOSpecError, match="unknown datatype"):
        parse(name)


def test_datatype_ranges_match_qonnx():
    for name in DTYPES + ["UINT32", "INT1", "FIXED<8,4>", "INT33", "UINT40", "INT64", "UINT64"]:
        ours, theirs = parse(name), QonnxDataType[name]
        assert (ours.bitwidth, ours.signed, ours.min, ours.max) == (
            theirs.bitwidth(),
            theirs.signed(),
            theirs.min(),
            theirs.max(),
        ), name
