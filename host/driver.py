"""Run a FINN accelerator over packed byte buffers, behind a backend seam.

`Accelerator` turns integer tensors into the byte buffers FINN's IO DMAs
move and back (see `host.packing`); a `Backend` moves the bytes.
`PynqBackend` drives the two DMA engines of FINN's Zynq shell (zynq-iodma)
through PYNQ; other backends (a model, a simulator, a test double) can
stand in for it.

Imports numpy and the standard library only; pynq is imported inside
`PynqBackend.__init__`, so this module loads where pynq is absent.
"""

from __future__ import annotations

import abc
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.datatypes import DataType, parse
from host.errors import BitfileError, DmaTimeoutError, HostError, IOSpecError
from host.executor import InputQuantiser
from host.packing import check_values, pack, packed_shape, unpack

# FINN's Zynq shell: IO DMA instance names and their HLS register map
IDMA_NAME, ODMA_NAME = "idma0", "odma0"
REG_CTRL = 0x00  # ap_ctrl: bit 0 start, bit 1 done (clear on read), bit 2 idle
REG_ADDR_LO = 0x10  # buffer address, low 32 bits
REG_ADDR_HI = 0x14  # buffer address, high 32 bits
REG_COUNT = 0x1C  # number of images in the batch
CTRL_START, CTRL_DONE, CTRL_IDLE = 0x1, 0x2, 0x4


# -- IO spec -------------------------------------------------------------------


def _shape_field(raw: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = raw.get(key)
    if value is None:
        raise IOSpecError(f"IO spec lacks {where}.{key}; add it (a list of ints, batch dim 1)")
    try:
        dims = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise IOSpecError(
            f"IO spec {where}.{key} = {value!r} is not a list of ints; fix it"
        ) from None
    if not dims or dims[0] != 1 or min(dims) < 1:
        raise IOSpecError(
            f"IO spec {where}.{key} = {list(dims)} must be positive with batch dim 1; fix it"
        )
    return dims


@dataclass(frozen=True)
class TensorSpec:
    """One accelerator port: datatype name, normal and folded shape (batch 1)."""

    datatype: str
    normal_shape: tuple[int, ...]  # e.g. (1, 784)
    folded_shape: tuple[int, ...]  # e.g. (1, 49, 16): (..., fold, elems_per_fold)

    def __post_init__(self) -> None:
        parse(self.datatype)  # IOSpecError for an unknown name
        object.__setattr__(self, "normal_shape", tuple(self.normal_shape))
        object.__setattr__(self, "folded_shape", tuple(self.folded_shape))
        if math.prod(self.normal_shape) != math.prod(self.folded_shape):
            raise IOSpecError(
                f"normal shape {self.normal_shape} and folded shape {self.folded_shape} "
                "hold different element counts; regenerate the IO spec from the build"
            )

    @property
    def dtype(self) -> DataType:
        return parse(self.datatype)

    @property
    def packed_shape(self) -> tuple[int, ...]:
        """(1, ..., fold, bytes): the byte shape the DMA moves per image."""
        return packed_shape(self.folded_shape, self.datatype)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> TensorSpec:
        if not isinstance(raw, Mapping):
            raise IOSpecError(f"IO spec {where} must be a mapping, got {type(raw).__name__}")
        if "datatype" not in raw:
            raise IOSpecError(f"IO spec lacks {where}.datatype; add a FINN name such as UINT8")
        try:
            name = parse(raw["datatype"]).name
        except IOSpecError as err:
            raise IOSpecError(f"IO spec {where}.datatype: {err}") from None
        normal = _shape_field(raw, "normal_shape", where)
        folded = _shape_field(raw, "folded_shape", where)
        try:
            spec = cls(name, normal, folded)
        except IOSpecError as err:
            raise IOSpecError(f"IO spec {where}: {err}") from None
        packed = _shape_field(raw, "packed_shape", where) if "packed_shape" in raw else None
        if packed is not None and packed != spec.packed_shape:
            raise IOSpecError(
                f"IO spec {where}.packed_shape = {list(packed)} but {name} in "
                f"folded shape {spec.folded_shape} packs to {list(spec.packed_shape)}; "
                "regenerate the IO spec from the build"
            )
        return spec

    def to_dict(self) -> dict:
        return {
            "datatype": self.datatype,
            "normal_shape": list(self.normal_shape),
            "folded_shape": list(self.folded_shape),
            "packed_shape": list(self.packed_shape),  # derived; checked on load
        }


@dataclass(frozen=True)
class IOSpec:
    """What the host must know of an accelerator's single input and output.

    JSON form: ``{"input": {"datatype": "UINT8", "normal_shape": [1, 784],
    "folded_shape": [1, 49, 16]}, "output": {...}}`` (a ``packed_shape``
    entry is optional and checked when present).
    """

    input: TensorSpec
    output: TensorSpec
    # the input Thresholding a build moved to the host (--input-quant host): raw values in,
    # ``input.datatype`` out, applied by `Accelerator.execute` before packing; None: none
    input_quantiser: InputQuantiser | None = None

    def __post_init__(self) -> None:
        q = self.input_quantiser
        if q is not None and q.datatype != self.input.datatype:
            raise IOSpecError(
                f"IO spec input_quantiser gives {q.datatype} but the input port is "
                f"{self.input.datatype}; regenerate the IO spec from the build"
            )

    @property
    def raw_datatype(self) -> str:
        """What `Accelerator.execute` takes: the quantiser's raw datatype, else the input port's."""
        return self.input_quantiser.raw_datatype if self.input_quantiser else self.input.datatype

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IOSpec:
        if not isinstance(raw, Mapping):
            raise IOSpecError(f"IO spec must be a mapping, got {type(raw).__name__}")
        for key in ("input", "output"):
            if key not in raw:
                raise IOSpecError(f"IO spec lacks the key {key!r}; add it")
        quantiser = None
        if raw.get("input_quantiser") is not None:
            try:
                quantiser = InputQuantiser.from_dict(raw["input_quantiser"])
            except HostError as err:
                raise IOSpecError(f"IO spec input_quantiser: {err}") from None
        return cls(
            TensorSpec.from_dict(raw["input"], "input"),
            TensorSpec.from_dict(raw["output"], "output"),
            quantiser,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> IOSpec:
        """Read the JSON form from a file."""
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError) as err:
            raise IOSpecError(
                f"cannot read IO spec {path}: {err}; copy it from the build"
            ) from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        out = {"input": self.input.to_dict(), "output": self.output.to_dict()}
        if self.input_quantiser is not None:
            out["input_quantiser"] = self.input_quantiser.to_dict()
        return out


# -- backends ----------------------------------------------------------------


def _batched(shape: Sequence[int], n: int) -> tuple[int, ...]:
    """shape with its batch dim (1) replaced by n."""
    return (n,) + tuple(shape[1:])


def _check_ibuf(ibuf: np.ndarray, n: int, spec: TensorSpec) -> None:
    want = spec.packed_shape[1:]
    if ibuf.dtype != np.uint8 or ibuf.shape[1:] != want or not 1 <= n <= ibuf.shape[0]:
        raise IOSpecError(
            f"input buffer is {ibuf.dtype} {ibuf.shape} for n={n}; expected uint8 "
            f"(N >= n >= 1, *{want}): pack it with host.packing.pack"
        )


class Backend(abc.ABC):
    """Moves packed bytes through an accelerator (real, modelled or fake)."""

    label: str = "modelled"  # how its results were obtained, for reports
    spec: IOSpec | None = None

    def bind(self, spec: IOSpec) -> None:
        """Called by Accelerator: the IO spec the byte buffers follow."""
        self.spec = spec

    @abc.abstractmethod
    def run(self, ibuf: np.ndarray, n: int) -> np.ndarray:
        """Run the first n images of ibuf, uint8 (N >= n, *input.packed_shape[1:]);
        return uint8 (n, *output.packed_shape[1:])."""


class Accelerator:
    """An accelerator seen as a function on integer tensors."""

    def __init__(self, spec: IOSpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        backend.bind(spec)

    @property
    def label(self) -> str:
        return self.backend.label

    def execute(self, x: np.ndarray) -> np.ndarray:
        """x: (N, *input.normal_shape[1:]) integers within the input datatype (within the
        quantiser's raw datatype where the spec has an ``input_quantiser``: it runs here, in
        numpy, before packing) -> (N, *output.normal_shape[1:]) in the output datatype's container."""
        i_spec, o_spec = self.spec.input, self.spec.output
        x = np.asarray(x)
        expected = "(" + ", ".join(["N"] + [str(d) for d in i_spec.normal_shape[1:]]) + ")"
        if x.ndim != len(i_spec.normal_shape) or x.shape[1:] != i_spec.normal_shape[1:]:
            raise IOSpecError(
                f"input has shape {x.shape} but the accelerator takes {expected}; reshape it"
            )
        n = x.shape[0]
        if n < 1:
            raise IOSpecError("input batch is empty; pass at least one image")
        if self.spec.input_quantiser is not None:
            check_values(x, self.spec.raw_datatype, "input")
            x = self.spec.input_quantiser(x)
        check_values(x, i_spec.datatype, "input")
        i_folded = _batched(i_spec.folded_shape, n)
        ibuf = pack(x.reshape(i_folded), i_spec.datatype, i_folded)
        obuf = np.asarray(self.backend.run(ibuf, n))
        o_folded = _batched(o_spec.folded_shape, n)
        y = unpack(obuf, o_spec.datatype, o_folded)
        return y.reshape(_batched(o_spec.normal_shape, n))


class PynqBackend(Backend):
    """FINN's zynq-iodma shell on a PYNQ board: two HLS DMA engines, idma0
    reading the input buffer and odma0 writing the output buffer.

    Follows FINN's driver (driver_base.py) except that the done bit is
    polled with a timeout and the fabric clock is set from the build's
    clock rather than a fixed 100 MHz.
    """

    def __init__(
        self,
        bitfile: str | os.PathLike,
        clock_mhz: float,
        device: Any = None,
        timeout_s: float = 30.0,
        download: bool = True,
        board: str | None = None,
    ) -> None:
        """bitfile: the .bit, with the .hwh beside it (same stem).
        clock_mhz: the build's fabric clock, set on fclk0 where the PS has one.
        device: a pynq.Device (None: PYNQ's active device).
        timeout_s: how long to wait for odma0's done bit per batch.
        board: name for `label`; default $BOARD, which PYNQ images set."""
        if not clock_mhz > 0 or not timeout_s > 0:
            raise HostError(
                f"clock_mhz={clock_mhz} and timeout_s={timeout_s} must both be > 0; "
                "pass the build's fabric clock and a timeout in seconds"
            )
        bit = Path(bitfile)
        hwh = bit.with_suffix(".hwh")
        for path, what in ((bit, "bitfile"), (hwh, ".hwh beside the bitfile")):
            if not path.is_file():
                raise BitfileError(
                    f"{what} not found: {path}; copy the build's .bit and .hwh there"
                )
        try:
            import pynq
        except ImportError as err:
            raise HostError(f"pynq is not importable ({err}); run on a PYNQ image") from None
        self._pynq = pynq
        self.overlay = pynq.Overlay(str(bit), download=download, device=device)
        self._idma, self._odma = self._find_dmas(hwh)
        self.clock_mhz = float(clock_mhz)
        self.clock_mhz_measured = self._set_clock(self.clock_mhz)
        self.timeout_s = float(timeout_s)
        self.board = board or os.environ.get("BOARD") or "an unnamed board"
        self.label = f"measured on {self.board}"
        self._buffers: tuple[int, Any, Any] | None = None  # (n, ibuf, obuf)

    def _find_dmas(self, hwh: Path) -> tuple[Any, Any]:
        found = sorted(self.overlay.ip_dict)
        missing = [name for name in (IDMA_NAME, ODMA_NAME) if name not in found]
        if missing:
            raise BitfileError(
                f"{hwh} has no {' or '.join(missing)} (IPs found: {', '.join(found)}); "
                "build the accelerator with FINN's zynq-iodma shell"
            )
        return getattr(self.overlay, IDMA_NAME), getattr(self.overlay, ODMA_NAME)

    def _set_clock(self, mhz: float) -> float | None:
        """Set fclk0 and read back what the PS achieved; None where no PS clock."""
        if not self._pynq.ps.CPU_ARCH_IS_SUPPORTED:
            return None
        self._pynq.Clocks.fclk0_mhz = mhz
        return float(self._pynq.Clocks.fclk0_mhz)

    def run(self, ibuf: np.ndarray, n: int) -> np.ndarray:
        if self.spec is None:
            raise HostError("PynqBackend has no IO spec; wrap it in Accelerator(spec, backend)")
        ibuf, n = np.asarray(ibuf), int(n)
        _check_ibuf(ibuf, n, self.spec.input)
        dev_in, dev_out = self._buffers_for(n)
        np.copyto(dev_in, ibuf[:n])
        dev_in.flush()
        self._start(dev_in, dev_out, n)
        self._wait_done(n)
        dev_out.invalidate()
        return np.array(dev_out)  # a plain ndarray copy

    def _buffers_for(self, n: int) -> tuple[Any, Any]:
        """Device buffers for a batch of n, reused while n stays the same."""
        if self._buffers is None or self._buffers[0] != n:
            self._buffers = None  # free the old pair before allocating
            shapes = [_batched(t.packed_shape, n) for t in (self.spec.input, self.spec.output)]
            device = self.overlay.device
            pair = [
                self._pynq.allocate(shape=s, dtype=np.uint8, cacheable=True, target=device)
                for s in shapes
            ]
            self._buffers = (n, pair[0], pair[1])
        return self._buffers[1], self._buffers[2]

    def _start(self, dev_in: Any, dev_out: Any, n: int) -> None:
        if not self._odma.read(REG_CTRL) & CTRL_IDLE:
            raise DmaTimeoutError(
                f"{ODMA_NAME} is not idle before a batch of {n} (an earlier batch never "
                "finished); reload the overlay with download=True"
            )
        # arm the output DMA before the input DMA, as FINN's driver does
        for dma, buf in ((self._odma, dev_out), (self._idma, dev_in)):
            address = int(buf.device_address)
            dma.write(REG_ADDR_LO, address & 0xFFFFFFFF)
            dma.write(REG_ADDR_HI, (address >> 32) & 0xFFFFFFFF)
            dma.write(REG_COUNT, n)
            dma.write(REG_CTRL, CTRL_START)

    def _wait_done(self, n: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self._odma.read(REG_CTRL) & CTRL_DONE:
            if time.monotonic() > deadline:
                raise DmaTimeoutError(
                    f"{ODMA_NAME} did not finish a batch of {n} within {self.timeout_s:g} s; "
                    "check the bitfile matches the IO spec, or raise timeout_s for big batches"
                )
