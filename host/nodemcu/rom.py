"""The ESP8266's ROM serial bootloader and esptool's flasher stub, over a flash image.

SLIP framing, then one handler per command opcode in COMMANDS (as esptool's ESP_CMDS table names
them). Requests: 0x00, op, 16-bit length, 32-bit checksum, payload. Responses: 0x01, op, length, 32-bit
value, data, then the ESP8266's two status bytes (status, error).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable

from nodemcu.flash import SECTOR, Flash

MAGIC_REG = 0x40001000
CHIP_MAGIC = 0xFFF0C101
SPI_BASE = 0x60000200
SPI_CMD, SPI_ADDR, SPI_USR2, SPI_W0 = SPI_BASE, SPI_BASE + 0x04, SPI_BASE + 0x24, SPI_BASE + 0x40
SPI_CMD_USR = 1 << 18
FLASH_ID = 0x1640EF  # Winbond (0xEF), 4 MB (capacity byte 0x16)
# The flash chip's SFDP table (JEDEC JESD216) as a W25Q32 starts it: the "SFDP" signature, the basic
# parameter header, then Winbond's own header (its ID, 0xEF, is what esptool's XMC check reads at 0x10).
SFDP = b"SFDP\x00\x01\x01\xff" b"\x00\x00\x01\x09\x80\x00\x00\xff" b"\xef\x00\x01\x04\xd0\x00\x00\xff"
# What the flash chip answers to the "user" SPI commands esptool sends through the SPI registers, by
# command byte; given the 24-bit address. RDSR/RDSR2/RDSR3 read 0: no write protection. Others answer 0.
SPI_FLASH_COMMANDS: dict[int, Callable[[int], int]] = {
    0x9F: lambda addr: FLASH_ID,  # RDID
    0x5A: lambda addr: int.from_bytes((SFDP[addr:addr + 4] + b"\xff" * 4)[:4], "little"),  # RDSFDP
    0x05: lambda addr: 0,  # RDSR
    0x35: lambda addr: 0,  # RDSR2
    0x15: lambda addr: 0,  # RDSR3
}

# ROM error codes (the second status byte)
ERR_INVALID = 0x05
ERR_FAILED = 0x06
ERR_CHECKSUM = 0x07
ERR_FLASH = 0x08
ERR_DEFLATE = 0x0B


class CommandError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    def __init__(self) -> None:
        self.buf: bytearray | None = None
        self.esc = False

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        for b in data:
            if self.buf is None:
                if b == 0xC0:
                    self.buf = bytearray()
                continue  # noise between frames is ignored, as the ROM does
            if self.esc:
                self.esc = False
                self.buf.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
            elif b == 0xDB:
                self.esc = True
            elif b == 0xC0:
                if self.buf:
                    out.append(bytes(self.buf))
                    self.buf = None
                # an empty frame (c0 c0): the second c0 starts the next one
            else:
                self.buf.append(b)
        return out


def checksum(data: bytes) -> int:
    c = 0xEF
    for b in data:
        c ^= b
    return c


def load_image(data: bytes) -> list[tuple[int, int]]:
    """What the ROM does before it jumps to the firmware: read the v1 image header at flash offset 0 and
    each segment (load address, length), and check the checksum byte. Raises ValueError when the ROM would
    stop (an erased or damaged image)."""
    if len(data) < 8 or data[0] != 0xE9 or not 1 <= data[1] <= 16:
        raise ValueError("no firmware image at 0x0")
    segments, offset, body = [], 8, b""
    for _ in range(data[1]):
        if offset + 8 > len(data):
            raise ValueError("truncated image")
        address, length = struct.unpack_from("<II", data, offset)
        offset += 8
        if offset + length > len(data):
            raise ValueError("truncated image")
        body += data[offset:offset + length]
        segments.append((address, length))
        offset += length
    end = (offset + 16) & ~15  # the checksum byte ends the 16-byte line after the last segment
    if end > len(data) or data[end - 1] != checksum(body):
        raise ValueError("image checksum wrong")
    return segments


class Bootloader:
    """What answers on the UART while the chip runs its ROM (and, once uploaded, the stub)."""

    def __init__(self, flash: Flash, mac: bytes, send: Callable[[bytes], None],
                 run_firmware: Callable[[], None]) -> None:
        self.flash = flash
        self.send = send
        self.run_firmware = run_firmware
        self.slip = SlipDecoder()
        self.stub = False
        self.regs: dict[int, int] = {
            MAGIC_REG: CHIP_MAGIC,
            0x60000014: 451,  # UART_CLKDIV at 115200 baud: a 26 MHz crystal
            0x3FF00050: mac[5] << 24,
            0x3FF00054: mac[3] << 8 | mac[4],
            0x3FF00058: 0,
            0x3FF0005C: mac[0] << 16 | mac[1] << 8 | mac[2],
        }
        self.write: dict | None = None  # the flash write under way: offset, next seq, inflater
        self.pending_read: tuple[int, int, int] | None = None
        self.read_acked = 0

    # -- framing ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        for packet in self.slip.feed(data):
            if self.pending_read is not None:
                self._read_ack(packet)
                continue
            self.packet(packet)

    def reply(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        body = data + bytes([1 if error else 0, error])
        self.send(slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body))

    def packet(self, p: bytes) -> None:
        if len(p) < 8 or p[0] != 0:
            return  # not a request: a real ROM stays silent
        op, size, chk = struct.unpack("<BHI", p[1:8])
        payload = p[8:8 + size]
        handler = COMMANDS.get(op)
        if handler is None or (op not in ROM_COMMANDS and not self.stub) or len(payload) != size:
            self.reply(op, error=ERR_INVALID)
            return
        try:
            result = handler(self, payload, chk)
        except CommandError as e:
            self.reply(op, error=e.code)
            return
        except (struct.error, ValueError, IndexError):
            self.reply(op, error=ERR_INVALID)
            return
        if result is not None:
            value, data = result
            self.reply(op, value, data)

    # -- commands ----------------------------------------------------------------------------------
    def sync(self, payload: bytes, chk: int):
        if payload[:4] != b"\x07\x07\x12\x20":
            raise CommandError(ERR_INVALID)
        value = 0 if self.stub else 0x20120707
        for _ in range(7):  # the ROM answers a SYNC eight times
            self.reply(0x08, value)
        return value, b""

    def read_reg(self, payload: bytes, chk: int):
        (addr,) = struct.unpack("<I", payload[:4])
        return self.regs.get(addr, 0), b""

    def write_reg(self, payload: bytes, chk: int):
        addr, value, mask, _delay = struct.unpack("<IIII", payload[:16])
        self.regs[addr] = (self.regs.get(addr, 0) & ~mask) | (value & mask) if mask != 0xFFFFFFFF else value
        if addr == SPI_CMD and value & SPI_CMD_USR:
            # A "user" SPI command to the flash chip; the address register holds it in its top 24 bits.
            answer = SPI_FLASH_COMMANDS.get(self.regs.get(SPI_USR2, 0) & 0xFF, lambda addr: 0)
            self.regs[SPI_W0] = answer(self.regs.get(SPI_ADDR, 0) >> 8)
            self.regs[SPI_CMD] = 0
        return 0, b""

    def mem_begin(self, payload: bytes, chk: int):
        struct.unpack("<IIII", payload[:16])
        return 0, b""

    def mem_data(self, payload: bytes, chk: int):
        size = struct.unpack("<I", payload[:4])[0]
        if checksum(payload[16:16 + size]) != chk & 0xFF:
            raise CommandError(ERR_CHECKSUM)
        return 0, b""

    def mem_end(self, payload: bytes, chk: int):
        no_entry, entry = struct.unpack("<II", payload[:8])
        self.reply(0x06)
        if not no_entry and entry:
            # esptool's flasher stub was uploaded and started: it greets, then answers stub commands.
            self.stub = True
            self.send(slip_encode(b"OHAI"))
        return None

    def flash_begin(self, payload: bytes, chk: int, deflate: bool = False):
        erase_size, blocks, block_size, offset = struct.unpack("<IIII", payload[:16])
        if offset + (erase_size if deflate else blocks * block_size) > self.flash.size:
            raise CommandError(ERR_FLASH)
        if not deflate and not self.stub:
            erase_size = blocks * block_size  # the ROM's own erase-size arithmetic differs; the data is what counts
        self.flash.erase(offset, erase_size)
        self.write = {"offset": offset, "seq": 0, "z": zlib.decompressobj() if deflate else None}
        return 0, b""

    def flash_data(self, payload: bytes, chk: int):
        size, seq = struct.unpack("<II", payload[:8])
        data = payload[16:16 + size]
        if self.write is None:
            raise CommandError(ERR_FAILED)
        if len(data) != size or checksum(data) != chk & 0xFF:
            raise CommandError(ERR_CHECKSUM)
        if seq != self.write["seq"]:
            raise CommandError(ERR_FAILED)
        z = self.write["z"]
        if z is not None:
            try:
                data = z.decompress(data)
            except zlib.error:
                raise CommandError(ERR_DEFLATE) from None
        self.flash.write(self.write["offset"], data)
        self.write["offset"] += len(data)
        self.write["seq"] += 1
        return 0, b""

    def flash_end(self, payload: bytes, chk: int, op: int = 0x04):
        (stay,) = struct.unpack("<I", payload[:4]) if payload else (1,)
        self.write = None
        self.flash.sync()
        self.reply(op)
        if not stay:
            self.run_firmware()
        return None

    def flash_defl_begin(self, payload: bytes, chk: int):
        return self.flash_begin(payload, chk, deflate=True)

    def flash_defl_end(self, payload: bytes, chk: int):
        return self.flash_end(payload, chk, op=0x12)

    def spi_set_params(self, payload: bytes, chk: int):
        return 0, b""

    def spi_attach(self, payload: bytes, chk: int):
        return 0, b""

    def change_baudrate(self, payload: bytes, chk: int):
        return 0, b""

    def md5(self, payload: bytes, chk: int):
        addr, size = struct.unpack("<II", payload[:8])
        if addr + size > self.flash.size:
            raise CommandError(ERR_FLASH)
        return 0, hashlib.md5(self.flash.read(addr, size)).digest()

    def erase_flash(self, payload: bytes, chk: int):
        self.flash.erase(0, self.flash.size)
        self.flash.sync()
        return 0, b""

    def erase_region(self, payload: bytes, chk: int):
        offset, size = struct.unpack("<II", payload[:8])
        if offset % SECTOR or size % SECTOR or offset + size > self.flash.size:
            raise CommandError(ERR_FAILED)
        self.flash.erase(offset, size)
        self.flash.sync()
        return 0, b""

    def read_flash(self, payload: bytes, chk: int):
        offset, length, block, _in_flight = struct.unpack("<IIII", payload[:16])
        if offset + length > self.flash.size or not block:
            raise CommandError(ERR_FLASH)
        self.reply(0xD2)
        self.pending_read = (offset, length, block)
        self.read_acked = 0
        self._send_block()
        return None

    def _send_block(self) -> None:
        assert self.pending_read
        offset, length, block = self.pending_read
        sent = self.read_acked
        if sent >= length:
            self.send(slip_encode(hashlib.md5(self.flash.read(offset, length)).digest()))
            self.pending_read = None
            return
        n = min(block, length - sent)
        self.send(slip_encode(self.flash.read(offset + sent, n)))

    def _read_ack(self, packet: bytes) -> None:
        if len(packet) == 4:
            (self.read_acked,) = struct.unpack("<I", packet)
            self._send_block()

    def run_user_code(self, payload: bytes, chk: int):
        self.run_firmware()
        return None


# The ESP8266's ROM knows only these; the rest are the flasher stub's (esptool never sends them to this ROM).
ROM_COMMANDS = frozenset(range(0x02, 0x0B))

COMMANDS: dict[int, Callable[..., tuple[int, bytes] | None]] = {
    0x02: Bootloader.flash_begin,       # FLASH_BEGIN
    0x03: Bootloader.flash_data,        # FLASH_DATA
    0x04: Bootloader.flash_end,         # FLASH_END
    0x05: Bootloader.mem_begin,         # MEM_BEGIN
    0x06: Bootloader.mem_end,           # MEM_END
    0x07: Bootloader.mem_data,          # MEM_DATA
    0x08: Bootloader.sync,              # SYNC
    0x09: Bootloader.write_reg,         # WRITE_REG
    0x0A: Bootloader.read_reg,          # READ_REG
    0x0B: Bootloader.spi_set_params,    # SPI_SET_PARAMS
    0x0D: Bootloader.spi_attach,        # SPI_ATTACH
    0x0F: Bootloader.change_baudrate,   # CHANGE_BAUDRATE
    0x10: Bootloader.flash_defl_begin,  # FLASH_DEFL_BEGIN
    0x11: Bootloader.flash_data,        # FLASH_DEFL_DATA
    0x12: Bootloader.flash_defl_end,    # FLASH_DEFL_END
    0x13: Bootloader.md5,               # SPI_FLASH_MD5
    0xD0: Bootloader.erase_flash,       # ERASE_FLASH (stub)
    0xD1: Bootloader.erase_region,      # ERASE_REGION (stub)
    0xD2: Bootloader.read_flash,        # READ_FLASH (stub)
    0xD3: Bootloader.run_user_code,     # RUN_USER_CODE (stub)
}
