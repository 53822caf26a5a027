"""A PYNQ device whose only hardware is FINN's two IO DMAs, for tests
without a board (PYNQ has no simulator; its own tests subclass pynq.Device
the same way).

Registers are reached through PYNQ's REGISTER_RW capability, so the real
pynq.Overlay / DefaultIP / MMIO code paths run; buffers are real
pynq.PynqBuffer objects with made-up physical addresses.  When idma0 is
started, the "hardware" applies `kernel` to the input buffer's first n
images and writes the result into the buffer odma0 was armed with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pynq
from pynq.metadata.runtime_metadata_parser import RuntimeMetadataParser
from pynqmetadata.frontends import Metadata

CTRL, ADDR_LO, ADDR_HI, COUNT = 0x00, 0x10, 0x14, 0x1C
START, DONE, IDLE = 0x1, 0x2, 0x4
DMAS = ("idma0", "odma0")

Kernel = Callable[[np.ndarray], np.ndarray]  # (n, *packed_in) uint8 -> (n, *packed_out)


class FakeZynq(pynq.Device):
    def __init__(self, kernel: Kernel = lambda x: x, stall: bool = False) -> None:
        super().__init__("fake_zynq")
        self.capabilities = {"REGISTER_RW": True}
        self.kernel = kernel
        self.stall = stall  # True: the DMAs never finish
        self.writes: list[tuple[str, int, int]] = []  # (ip, offset, value), in order
        self.regs: dict[tuple[str, int], int] = {(dma, CTRL): IDLE for dma in DMAS}
        self.buffers: dict[int, pynq.buffer.PynqBuffer] = {}  # by device address
        self.flushes = self.invalidates = 0
        self._next_address = 0x1000_0000

    # metadata: the path EmbeddedDevice takes, minus the xclbin XRT needs
    def get_bitfile_metadata(self, bitfile_name: str) -> RuntimeMetadataParser:
        return RuntimeMetadataParser(Metadata(input=Path(bitfile_name).with_suffix(".hwh")))

    # registers
    def _locate(self, address: int) -> tuple[str, int]:
        for name, ip in self.ip_dict.items():
            base = ip.get("phys_addr")
            if base is not None and base <= address < base + ip["addr_range"]:
                return name, address - base
        raise AssertionError(f"access to unmapped address {address:#x}")

    def read_registers(self, address: int, length: int) -> bytes:
        name, offset = self._locate(address)
        value = self.regs.get((name, offset), 0)
        if offset == CTRL and name in DMAS:
            self.regs[(name, CTRL)] = value & ~DONE  # ap_done clears on read
        return value.to_bytes(length, "little")

    def write_registers(self, address: int, data: bytes) -> None:
        name, offset = self._locate(address)
        value = int.from_bytes(data, "little")
        self.writes.append((name, offset, value))
        self.regs[(name, offset)] = value
        if name in DMAS and offset == CTRL and value & START:
            self.regs[(name, CTRL)] = START  # busy, not idle
            if name == "idma0" and not self.stall:
                self._run()

    def _dma_buffer(self, dma: str) -> pynq.buffer.PynqBuffer:
        address = self.regs[(dma, ADDR_LO)] | self.regs[(dma, ADDR_HI)] << 32
        return self.buffers[address]

    def _run(self) -> None:
        n = self.regs[("idma0", COUNT)]
        assert self.regs[("odma0", COUNT)] == n, "odma0 was not armed for this batch"
        assert self.regs[("odma0", CTRL)] == START, "odma0 was not started before idma0"
        src, dst = self._dma_buffer("idma0"), self._dma_buffer("odma0")
        dst[:n] = self.kernel(np.array(src[:n]))
        for dma in DMAS:
            self.regs[(dma, CTRL)] = IDLE | DONE

    # memory
    def allocate(self, shape, dtype, **kwargs) -> pynq.buffer.PynqBuffer:
        buf = pynq.buffer.PynqBuffer(
            shape, dtype, device=self, device_address=self._next_address, coherent=False
        )
        self.buffers[self._next_address] = buf
        self._next_address += -(-buf.nbytes // 4096) * 4096
        return buf

    def flush(self, bo, offset, vaddr, length) -> None:
        self.flushes += 1

    def invalidate(self, bo, offset, vaddr, length) -> None:
        self.invalidates += 1
