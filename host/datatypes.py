"""FINN/QONNX datatype names, described with numpy only.

The accelerator's IO datatypes arrive as the names FINN writes
(``UINT8``, ``INT4``, ``BIPOLAR``, ``FIXED<8,4>``).  `parse` turns a name
into a `DataType` holding what packing needs: bit width, signedness, the
value range and the numpy containers for values and for their bit patterns.
The one parser of these names on both sides: the driver and packing (IO
datatypes) and the executor (every layer's datatypes, through `int_range`).
Mirrors ``qonnx.core.datatype`` for these kinds without importing it, so
that it runs on the board (Python 3.10, numpy 1.21).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from host.errors import IOSpecError

MAX_BITS = 64  # integers up to 64 bits: numpy's widest exact containers
MAX_FIXED_BITS = 32  # FIXED values are floats: float64 holds every FIXED<w,i> with w <= 32 exactly
SUPPORTED = "BIPOLAR, BINARY, UINTn, INTn (n = 1..64) or FIXED<w,i> (1 <= i < w <= 32)"

_INT_RE = re.compile(r"(U?INT)(\d+)")
_FIXED_RE = re.compile(r"FIXED<\s*(\d+)\s*,\s*(\d+)\s*>")


@dataclass(frozen=True)
class DataType:
    """One FINN datatype.

    A value's bit pattern (its *code*) is the low ``bitwidth`` bits of its
    two's complement integer; BIPOLAR codes -1 as 0 and +1 as 1, FIXED<w,i>
    codes x as the w-bit integer x * 2**(w-i), as FINN does.
    """

    name: str  # canonical name, as FINN writes it
    bitwidth: int
    signed: bool
    min: float  # smallest allowed value (an integer except for FIXED)
    max: float  # largest allowed value
    frac_bits: int = 0  # FIXED only: bits after the binary point

    @property
    def is_bipolar(self) -> bool:
        return self.name == "BIPOLAR"

    @property
    def is_fixed(self) -> bool:
        return self.name.startswith("FIXED")

    @property
    def scale(self) -> float:
        """Value of one step of the code: 2**-frac_bits (1 for integers)."""
        return 2.0**-self.frac_bits

    @property
    def code_dtype(self) -> np.dtype:
        """Smallest unsigned numpy type that holds a code."""
        return _uint_container(self.bitwidth)

    @property
    def value_dtype(self) -> np.dtype:
        """numpy type of unpacked values: the smallest exact container."""
        if self.is_fixed:
            return np.dtype(np.float32 if self.bitwidth <= 24 else np.float64)
        if self.signed:
            return np.dtype(f"int{8 * self.code_dtype.itemsize}")
        return self.code_dtype

    def __str__(self) -> str:
        return self.name


def _uint_container(bits: int) -> np.dtype:
    for nbytes in (1, 2, 4):
        if bits <= 8 * nbytes:
            return np.dtype(f"uint{8 * nbytes}")
    return np.dtype(np.uint64)


def _integer(name: str, bits: int, signed: bool) -> DataType:
    if signed:
        return DataType(name, bits, True, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return DataType(name, bits, False, 0, 2**bits - 1)


def _fixed(width: int, int_bits: int) -> DataType:
    frac = width - int_bits
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    name = f"FIXED<{width},{int_bits}>"
    return DataType(name, width, True, lo * 2.0**-frac, hi * 2.0**-frac, frac)


@functools.cache
def parse(name: str) -> DataType:
    """DataType for a FINN datatype name; IOSpecError for any other name."""
    if not isinstance(name, str):
        raise IOSpecError(f"datatype must be a name string, got {name!r}; use {SUPPORTED}")
    text = name.strip().upper()
    if text == "BIPOLAR":
        return DataType("BIPOLAR", 1, True, -1, 1)
    if text == "BINARY":
        return DataType("BINARY", 1, False, 0, 1)
    match = _INT_RE.fullmatch(text)
    if match and 1 <= int(match.group(2)) <= MAX_BITS:
        return _integer(text, int(match.group(2)), match.group(1) == "INT")
    match = _FIXED_RE.fullmatch(text)
    if match:
        width, int_bits = int(match.group(1)), int(match.group(2))
        if 1 <= int_bits < width <= MAX_FIXED_BITS:
            return _fixed(width, int_bits)
    raise IOSpecError(f"unknown datatype {name!r}; use {SUPPORTED}")


def as_datatype(dtype: DataType | str) -> DataType:
    """Accept either a DataType or its name."""
    return dtype if isinstance(dtype, DataType) else parse(dtype)


def int_range(name: str) -> tuple[int, int]:
    """(min, max) of an integer datatype (BIPOLAR, BINARY, INTn, UINTn; n <= 64) as Python
    ints; IOSpecError for FIXED and unknown names."""
    dt = parse(name)
    if dt.is_fixed:
        raise IOSpecError(f"datatype {name!r} is not an integer datatype; use BIPOLAR, BINARY, INTn or UINTn")
    return int(dt.min), int(dt.max)
