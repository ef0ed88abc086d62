"""The board's USB-serial port, two ways in: an RFC 2217 server (pyserial's PortManager, so DTR and RTS
reach the board as esptool and mpremote set them) and a pty for terminal programs."""

from __future__ import annotations

import fcntl
import os
import pty
import socket
import threading
import tty
from collections.abc import Callable

from serial.rfc2217 import PortManager

LineHandler = Callable[[bool, bool], None]


class UsbSerialChip:
    """The attributes PortManager sets and reads; DTR and RTS changes go to the board's reset circuit."""

    def __init__(self, on_lines: LineHandler) -> None:
        self._on_lines = on_lines
        self._dtr = False
        self._rts = False
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.rtscts = False
        self.xonxoff = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._on_lines(self._dtr, self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._on_lines(self._dtr, self._rts)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class Rfc2217Server:
    """One client at a time, like a serial port: a second one is refused while the first is connected."""

    def __init__(self, uart_in: Callable[[bytes], None], on_lines: LineHandler,
                 add_sink: Callable[[Callable[[bytes], None]], None],
                 remove_sink: Callable[[Callable[[bytes], None]], None]) -> None:
        self.uart_in = uart_in
        self.on_lines = on_lines
        self.add_sink = add_sink
        self.remove_sink = remove_sink
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2)
        self.port: int = self.sock.getsockname()[1]
        self.busy = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="rfc2217").start()

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self.busy.acquire(blocking=False):
                conn.close()  # the port is open elsewhere
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wlock = threading.Lock()

        class Writer:
            def write(self, data: bytes) -> None:
                with wlock:
                    try:
                        conn.sendall(data)
                    except OSError:
                        pass

        manager = PortManager(UsbSerialChip(self.on_lines), Writer())

        def sink(data: bytes) -> None:
            Writer().write(b"".join(manager.escape(data)))

        self.add_sink(sink)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                out = b"".join(manager.filter(data))
                if out:
                    self.uart_in(out)
        except OSError:
            pass
        finally:
            self.remove_sink(sink)
            conn.close()
            self.on_lines(False, False)  # a closed port releases both lines
            self.busy.release()

    def close(self) -> None:
        self.sock.close()


class Pty:
    """A pseudo-terminal for miniterm, screen or mpremote without RFC 2217 (no DTR/RTS there)."""

    def __init__(self, uart_in: Callable[[bytes], None]) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        fl = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.uart_in = uart_in
        threading.Thread(target=self._read, daemon=True, name="pty").start()

    def _read(self) -> None:
        import select

        while True:
            try:
                r, _, _ = select.select([self.master], [], [], 1.0)
                if r:
                    data = os.read(self.master, 4096)
                    if data:
                        self.uart_in(data)
            except BlockingIOError:
                continue
            except OSError:
                return

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except OSError:
            pass  # nobody is reading the terminal: the bytes are dropped, as a UART would

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
