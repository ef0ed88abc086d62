"""The board's 4 MB SPI flash: a file in the state folder, erased bytes 0xFF, 4 KB sectors."""

from __future__ import annotations

import mmap
from pathlib import Path

SIZE = 4 * 1024 * 1024
SECTOR = 4096


class Flash:
    def __init__(self, path: Path, size: int = SIZE) -> None:
        self.path = path
        self.size = size
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(b"\xff" * size)
        self._f = open(path, "r+b")  # noqa: SIM115 (kept open for the mmap)
        self.mem = mmap.mmap(self._f.fileno(), size)

    def read(self, offset: int, length: int) -> bytes:
        return self.mem[offset:offset + length]

    def write(self, offset: int, data: bytes) -> None:
        # NOR flash: programming only clears bits.
        n = len(data)
        old = int.from_bytes(self.mem[offset:offset + n], "little")
        self.mem[offset:offset + n] = (old & int.from_bytes(data, "little")).to_bytes(n, "little")

    def erase(self, offset: int, length: int) -> None:
        start = offset - offset % SECTOR
        end = min(self.size, -(-(offset + length) // SECTOR) * SECTOR)
        self.mem[start:end] = b"\xff" * (end - start)

    def sync(self) -> None:
        self.mem.flush()

    def close(self) -> None:
        self.mem.flush()
        self.mem.close()
        self._f.close()
