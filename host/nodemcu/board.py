"""A virtual NodeMCU: power, the auto-reset circuit, the ROM or the firmware on the UART, GPIOs and Wi-Fi
state in state.json, and the board's own MicroPython (runtime.py) as the firmware's engine."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodemcu import runtime
from nodemcu.flash import Flash
from nodemcu.rom import Bootloader, load_image
from nodemcu.usb import Pty, Rfc2217Server

Wiring = list[dict[str, Any]]  # LEDs: {"name", "gpio", "active_low"}


class NodeMCU:
    """The board's facts, in one place."""

    HEAP = runtime.HEAP
    MAC = "5c:cf:7f:1a:2b:3c"
    FLASH_USER_START = 0x100000  # where ESP8266_GENERIC's filesystem region starts (2 MiB chips and up)
    # The FLASH_2M_ROMFS variant's read-only partition (boards/esp8266_2MiB_ROMFS.ld). An image is that
    # variant when it carries its build name, as sys.implementation._build does on the board.
    ROMFS = (0xB0000, 320 * 1024)
    ROMFS_BUILD = b"ESP8266_GENERIC-FLASH_2M_ROMFS"
    # The NodeMCU's own LEDs, wired to 3.3 V (pin low = lit): what the console names before the board's
    # settings say otherwise.
    WIRING: Wiring = [{"name": "blue", "gpio": 2, "active_low": True},
                      {"name": "red", "gpio": 16, "active_low": True}]
    RST_POWER_ON, RST_WDT, RST_SOFT, RST_HARD = 0, 1, 4, 6
    FILES = ("flash.bin", "state.json", "state.tmp", "ctl.sock")  # what a board keeps in its state folder
    ROM_BANNER = " ets Jan  8 2013,rst cause:%d, boot mode:(%d,%d)\r\n\r\n"



class Board:
    def __init__(self, state: Path, heap: int = NodeMCU.HEAP, sta: dict[str, str] | None = None,
                 sta_delay_ms: int = 1500, log: Callable[[str], None] = print,
                 wiring: Callable[[Board], Wiring | None] | None = None, mac: str = NodeMCU.MAC,
                 address: str | None = None) -> None:
        """wiring(board), asked at every boot, names the LEDs on the console and in state.json (the
        deploy tool reads them from the board's settings); None: the NodeMCU's own two.
        address: a loopback address of the board's own (127.0.0.N), as a board has one on a LAN: its ports 80
        and 53 there, its IP on home Wi-Fi; None: its ports moved to free ports on 127.0.0.1."""
        if address:
            runtime.check_address(address)
        self.dir = state.resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.dir
        self.heap = heap
        self.wiring_of = wiring
        self.wiring: Wiring = NodeMCU.WIRING
        self.sta = sta or {}
        self.sta_delay_ms = sta_delay_ms
        self.log = log
        self.flash = Flash(state / "flash.bin")
        self.lock = threading.RLock()
        self.sinks: list[Callable[[bytes], None]] = []
        self.mac = mac
        self.address = address
        if address:
            self.http_port, self.dns_port = runtime.OWN_PORTS[80], runtime.OWN_PORTS[53]
        else:
            self.http_port = runtime.free_port()
            self.dns_port = runtime.free_port(socket.SOCK_DGRAM)
        self.pins: dict[str, int] = {}  # input levels held by the outside world (a button)
        self.lines = (False, False)
        self.en = True
        self.mode = "off"
        self.rom: Bootloader | None = None
        self.proc: subprocess.Popen | None = None
        self._waited = (0, 0.0)  # (pid, seconds) its MicroPython waited for a CPU, as last read (_clock)
        self.master: int | None = None
        self.raw = False
        self.ready = False
        self.at_repl = False  # the firmware's start-up (boot.py, main.py) has ended: the REPL is idle
        self.pending = b""
        self.reset_request: str | None = None
        self.wdt: tuple[int, float] | None = None
        self.gpio: dict[str, dict[str, Any]] = {}
        self.wlan: dict[str, Any] = {}
        self.hostname = ""
        self.boots = 0
        self.romfs = False
        self.hw = runtime.HwLink(self._hw_message)
        self.rfc2217 = Rfc2217Server(self.uart_in, self.set_lines, self.sinks.append, self._remove_sink)
        self.pty = Pty(self.uart_in)
        self.sinks.append(self.pty.write)
        self._stop = threading.Event()
        self._typed = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True, name="wdt").start()
        threading.Thread(target=self._deliver, daemon=True, name="uart").start()
        runtime.build()

    # -- the outside world -----------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        host = self.address or "127.0.0.1"
        http = f"http://{host}/" if self.http_port == 80 else f"http://{host}:{self.http_port}/"
        return {"serial": self.rfc2217.url, "pty": self.pty.path, "http": http,
                "dns": f"udp://{host}:{self.dns_port}", "state": str(self.dir / "state.json")}

    def power_on(self) -> None:
        with self.lock:
            self._boot(self.pins.get("0", 1) == 0, NodeMCU.RST_POWER_ON)

    def power_off(self) -> None:
        with self.lock:
            self._stop_firmware()
            self.mode = "off"
            self.gpio = {}
            self.wlan = {}
            self._write_state()

    def power_cycle(self, hold_flash: bool = False) -> None:
        self.power_off()
        time.sleep(0.05)
        if hold_flash:
            self._press_flash_after_rom(NodeMCU.RST_POWER_ON)
        else:
            self.power_on()

    def reset(self, hold_flash: bool = False) -> None:
        """The RST button: EN pulsed low."""
        with self.lock:
            if hold_flash:
                self._press_flash_after_rom(NodeMCU.RST_HARD)
            else:
                self._boot(self.pins.get("0", 1) == 0, NodeMCU.RST_HARD)

    def _press_flash_after_rom(self, cause: int) -> None:
        """FLASH (GPIO0) pressed just after the ROM sampled it: the firmware starts and sees the button
        held, the way to reach an app's safe mode (held during the reset, it would be the bootloader).
        It stays pressed until `set_pin(0, 1)`."""
        with self.lock:
            self.pins["0"] = 0
            self._boot(False, cause)

    def set_pin(self, gpio: int, level: int) -> None:
        with self.lock:
            self.pins[str(gpio)] = level
            self.hw.send(pins={str(gpio): level})
            self._write_state()

    def drop_sta(self) -> None:
        self.hw.send(sta_drop=True)

    def close(self) -> None:
        self._stop.set()
        self.power_off()
        self.rfc2217.close()
        self.pty.close()
        self.hw.close()
        self.flash.close()

    # -- UART --------------------------------------------------------------------------------------
    def emit(self, data: bytes) -> None:
        for sink in list(self.sinks):
            sink(data)

    def _remove_sink(self, sink: Callable[[bytes], None]) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def uart_in(self, data: bytes) -> None:
        with self.lock:
            if self.mode == "rom" and self.rom:
                self.rom.feed(data)
            elif self.mode == "firmware" and self.master is not None:
                for b in data:
                    if b == 0x01:
                        self.raw = True
                    elif b == 0x02:
                        self.raw = False
                self.pending = (self.pending + data)[-self.UART_BUFFER:]  # beyond it, lost as a full FIFO's
                self._typed.set()

    UART_BUFFER = 4096

    def _deliver(self) -> None:
        """What was typed reaches MicroPython as it would through the board's UART. The unix port's REPL takes
        its terminal raw with TCSAFLUSH, dropping input typed before: so input waits until the REPL reads
        (ISIG off), or until the firmware's start-up has mounted the filesystem; Ctrl-C meanwhile goes at
        once (while code runs it is KeyboardInterrupt)."""
        while not self._stop.is_set():
            self._typed.wait(0.5)
            with self.lock:
                if not self.pending or self.mode != "firmware" or self.master is None or not self.ready:
                    self._typed.clear()
                    continue
                try:
                    running = termios.tcgetattr(self.master)[3] & termios.ISIG
                    if not running:
                        os.write(self.master, self.pending)
                        self.pending = b""
                    elif b"\x03" in self.pending:
                        os.write(self.master, b"\x03")
                        self.pending = self.pending.replace(b"\x03", b"")
                except BlockingIOError:
                    self.pending = b""  # its input buffer is full: lost, as a UART's FIFO overflows
                except (OSError, termios.error):
                    pass
            time.sleep(0.005)

    # -- the NodeMCU's auto-reset circuit --------------------------------------------------------------
    def set_lines(self, dtr: bool, rts: bool) -> None:
        """EN is pulled low while RTS is asserted and DTR is not; GPIO0 while DTR is asserted and RTS is not.
        Over RFC 2217 the two lines change one command apart, where a USB chip changes them together: with
        both asserted, EN keeps the level it had (the EN capacitor holds it), so the reset sequences of
        esptool and mpremote act as on a real board."""
        with self.lock:
            self.lines = (dtr, rts)
            if rts and not dtr:
                en = False
            elif dtr and rts:
                en = self.en
            else:
                en = True
            gpio0_low = (dtr and not rts) or self.pins.get("0", 1) == 0
            if en == self.en:
                return
            self.en = en
            if not en:
                self._stop_firmware()
                self.mode = "reset"
                self.gpio = {}
                self.wlan = {}
                self._write_state()
            else:
                self._boot(gpio0_low, NodeMCU.RST_HARD)

    # -- booting ---------------------------------------------------------------------------------------
    def _boot(self, bootloader: bool, cause: int) -> None:
        self._stop_firmware()
        self.gpio = {}
        self.wlan = {}
        self.boots += 1
        if bootloader:
            self.emit((NodeMCU.ROM_BANNER % (2 if cause else 0, 1, 7)).encode() + b"waiting for host\r\n")
            self.mode = "rom"
            self.rom = Bootloader(self.flash, bytes.fromhex(self.mac.replace(":", "")), self.emit,
                                  self._run_from_rom)
            self._write_state()
            return
        self.emit((NodeMCU.ROM_BANNER % (2 if cause else 0, 3, 6)).encode())
        self.flash.sync()
        firmware = self.flash.read(0, NodeMCU.ROMFS[0])
        try:
            segments = load_image(firmware)
        except ValueError:
            self.emit(b"ets_main.c \r\n")  # an erased or broken image: the ROM stops here
            self.mode = "halted"
            self._write_state()
            return
        for address, length in segments:  # the ROM loads each segment into RAM, and says so
            self.emit(b"load 0x%08x, len %d, room 16 \r\n" % (address, length))
        self.romfs = NodeMCU.ROMFS_BUILD in firmware
        self.wiring = (self.wiring_of and self.wiring_of(self)) or NodeMCU.WIRING
        self._start_firmware(cause, soft=False)

    def _run_from_rom(self) -> None:
        # Called from the bootloader (FLASH_END with reboot, RUN_USER_CODE): leave it for the firmware.
        threading.Thread(target=lambda: (time.sleep(0.05), self._boot_locked(False, NodeMCU.RST_HARD)),
                         daemon=True).start()

    def _boot_locked(self, bootloader: bool, cause: int) -> None:
        with self.lock:
            self._boot(bootloader, cause)

    def _start_firmware(self, cause: int, soft: bool) -> None:
        self.mode = "firmware"
        self.ready = False
        self.at_repl = False
        self.pending = b""
        self.rom = None
        self.reset_request = None
        self.wdt = None
        master, slave = pty.openpty()
        # Raw, but with ISIG: MicroPython takes the terminal raw while at the REPL and back to this while
        # running code, so Ctrl-C interrupts main.py as it does on the board.
        attrs = termios.tcgetattr(slave)
        attrs[0] = 0
        attrs[1] = 0
        attrs[3] = termios.ISIG
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        hw = {**self._hw(), "pins": dict(self.pins), "sta": self.sta, "sta_delay_ms": self.sta_delay_ms,
              "reset_cause": NodeMCU.RST_SOFT if soft else cause, "raw": soft and self.raw}
        proc = runtime.launch(self.dir, hw, self.hw, {80: self.http_port, 53: self.dns_port}, self.heap,
                              repl=True, address=self.address, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        os.set_blocking(master, False)  # a MicroPython not reading its input must not stall the board
        self.proc, self.master = proc, master
        if soft and self.raw:
            self.pending = b"\x01"  # back into the raw REPL the reset came from
        threading.Thread(target=self._relay, args=(proc, master), daemon=True, name="mpy").start()
        self._write_state()

    def _hw(self) -> dict[str, Any]:
        hw: dict[str, Any] = {"mac": self.mac, "flash": str(self.flash.path), "flash_size": self.flash.size,
                              "flash_user_start": NodeMCU.FLASH_USER_START}
        if self.romfs:
            hw["romfs"] = list(NodeMCU.ROMFS)
        return hw

    def read_file(self, name: str) -> bytes | None:
        """A file from the board's filesystem (littlefs on the flash image), read by the board's own
        MicroPython while the firmware is not running; None when it is not there."""
        self.flash.sync()
        script = ("import vfs, sys\nvfs.umount('/')\nfrom flashbdev import bdev\ntry:\n vfs.mount(bdev, '/')\n"
                  " f = open(%r, 'rb')\nexcept OSError:\n sys.exit(1)\nsys.stdout.buffer.write(f.read())\n" % name)
        r = runtime.run(["-c", script], self.dir, hw=self._hw(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out, _ = r.communicate(timeout=20)
        return out if r.returncode == 0 else None

    def _relay(self, proc: subprocess.Popen, master: int) -> None:
        prev_cr = False
        while True:
            try:
                r, _, _ = select.select([master], [], [], 0.5)
                data = os.read(master, 4096) if r else b""
            except BlockingIOError:
                continue
            except OSError:
                break
            if data:
                # The port's UART output ends print()'s lines with CRLF; the unix port writes a bare LF.
                out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                if prev_cr and data[:1] == b"\n":
                    out = out[1:]  # its CR went out with the previous chunk
                prev_cr = data[-1:] == b"\r"
                self.emit(out)
            elif proc.poll() is not None:
                break
        proc.wait()
        time.sleep(0.1)  # a reset message from the shims may still be on its way
        with self.lock:
            if self.proc is not proc:
                return  # stopped on purpose
            os.close(master)
            self.proc = self.master = None
            request = self.reset_request
            if request == "hard":
                self._boot(self.pins.get("0", 1) == 0, NodeMCU.RST_HARD)
            else:
                # The unix port ends on a soft reset (Ctrl-D); the board restarts MicroPython.
                self.emit(b"MPY: soft reboot\r\n")
                self._start_firmware(NodeMCU.RST_SOFT, soft=True)

    def _stop_firmware(self) -> None:
        proc, master = self.proc, self.master
        self.proc = self.master = None
        self.rom = None
        self.wdt = None
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        if master is not None:
            try:
                os.close(master)
            except OSError:
                pass

    # -- what the shims report -----------------------------------------------------------------------
    def _hw_message(self, msg: dict[str, Any]) -> None:
        with self.lock:
            if self.mode != "firmware":
                return
            if "gpio" in msg:
                old = self.gpio.get(str(msg["gpio"]), {})
                self.gpio[str(msg["gpio"])] = {"mode": msg["mode"], "level": msg["level"]}
                if msg["mode"] != "in" and (old.get("level") != msg["level"] or old.get("mode") != msg["mode"]):
                    self.log(runtime.gpio_line(msg["gpio"], msg["level"], self.wiring))
            elif "wlan" in msg:
                self.wlan[msg["wlan"]] = {k: v for k, v in msg.items() if k != "wlan"}
            elif "hostname" in msg:
                self.hostname = msg["hostname"]
            elif "wdt" in msg:
                self.wdt = (msg["wdt"], self._clock()) if msg["wdt"] else None
            elif "feed" in msg and self.wdt:
                self.wdt = (self.wdt[0], self._clock())
            elif "repl" in msg:
                self.at_repl = True
            elif "ready" in msg:
                self.ready = True
                self._typed.set()
            elif "reset" in msg:
                self.reset_request = "hard" if msg["reset"] in ("hard", "deepsleep") else "soft"
                # The shim ends its MicroPython with SystemExit, but `micropython -i` takes that to its REPL:
                # the chip resets now, before its watchdog could bite.
                if self.proc and msg["reset"] != "soft":
                    self.wdt = None
                    self.proc.kill()
            self._write_state()

    def _clock(self) -> float:
        """The board's time, which its watchdog counts: this host's clock less the time its MicroPython
        waited for a CPU (/proc/PID/schedstat). The chip's code never waits for a CPU; here a loaded host
        can hold it off for seconds, and a watchdog on the host's clock would bite a board that was never
        given the time to feed it."""
        proc = self.proc
        if proc:
            try:
                with open(f"/proc/{proc.pid}/schedstat") as f:
                    self._waited = (proc.pid, int(f.read().split()[1]) / 1e9)
            except (OSError, ValueError, IndexError):  # not Linux, or it has just ended: as last read
                pass
        return time.monotonic() - (self._waited[1] if proc and self._waited[0] == proc.pid else 0.0)

    def _watchdog(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                if self.wdt and self._clock() - self.wdt[1] > self.wdt[0] / 1000:
                    self.log("watchdog: not fed for %d ms, resetting" % self.wdt[0])
                    self._boot(self.pins.get("0", 1) == 0, NodeMCU.RST_WDT)

    def leds(self) -> dict[str, bool]:
        out = {}
        for led in self.wiring:
            g = self.gpio.get(str(led["gpio"]))
            lit = bool(g and g["mode"] != "in" and (g["level"] == 0) == led["active_low"])
            out[led["name"]] = lit
        return out

    def state(self) -> dict[str, Any]:
        return {"power": self.mode != "off", "mode": self.mode, "repl": self.mode == "firmware" and self.at_repl,
                "boots": self.boots, "gpio": self.gpio,
                "leds": self.leds(), "wlan": self.wlan, "hostname": self.hostname, "pins": self.pins,
                **self.info()}

    def _write_state(self) -> None:
        path = self.dir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1))
        tmp.replace(path)
