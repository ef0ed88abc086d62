# The virtual board's wiring: what the shims of machine, network and esp tell the host
# (GPIO levels, Wi-Fi state, resets) and what the host tells them (input pins, Wi-Fi in range).
# One UDP datagram per message, JSON, on loopback; ESPBLINK_HW holds the board's description.
import json
import os
import select
import socket

cfg = json.loads(os.getenv("ESPBLINK_HW") or "{}")
# Input levels held by the outside world, by GPIO number (JSON names them as text: read as numbers once,
# so reading a pin allocates nothing).
pins = {}
_held = cfg.pop("pins", None) or {}
for _k in _held:
    pins[int(_k)] = _held[_k]
del _held
_sock = _poller = None
if cfg.get("hw"):
    _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _sock.connect(socket.getaddrinfo("127.0.0.1", cfg["hw"])[0][-1])
    _sock.setblocking(False)
    _poller = select.poll()
    _poller.register(_sock, select.POLLIN)


def send(**msg):
    if _sock:
        try:
            _sock.send(json.dumps(msg))
        except OSError:
            pass


def poll():
    # Apply what the host sent since the last call (pin levels, a dropped Wi-Fi link). Reading a pin on
    # the chip allocates nothing: with nothing sent, neither does this (ipoll gives no list, and no
    # OSError is raised).
    while _poller:
        for _ in _poller.ipoll(0):
            break
        else:
            return
        try:
            data = _sock.recv(512)
        except OSError:
            return
        try:
            msg = json.loads(data)
        except ValueError:
            continue
        for k in msg:
            if k == "pins":
                for p in msg[k]:
                    pins[int(p)] = msg[k][p]
            else:
                cfg[k] = msg[k]

