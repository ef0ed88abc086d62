# esp for the virtual NodeMCU, after the ESP8266 port's API (micropython-esp8266-stubs).
# Flash access goes to the board's flash image when the host gives one (the virtual board).
import gc

import hwlink

SLEEP_NONE = 0
SLEEP_LIGHT = 1
SLEEP_MODEM = 2

_flash = None
_ERASED = b"\xff" * 256
if hwlink.cfg.get("flash"):
    _flash = open(hwlink.cfg["flash"], "r+b")


def osdebug(level, *args):
    pass


def flash_size():
    return hwlink.cfg.get("flash_size", 4 * 1024 * 1024)


def flash_user_start():
    return hwlink.cfg.get("flash_user_start", 0xA0000)


def flash_id():
    return 0x1640E0


def _need_flash():
    if _flash is None:
        raise OSError(5)


def flash_read(offset, buf_or_len):
    _need_flash()
    _flash.seek(offset)
    if isinstance(buf_or_len, int):
        return _flash.read(buf_or_len)
    _flash.readinto(buf_or_len)


def flash_write(offset, buf):
    _need_flash()
    _flash.seek(offset)
    _flash.write(buf)
    _flash.flush()


def flash_erase(sector):
    _need_flash()
    _flash.seek(sector * 4096)
    for _ in range(16):
        _flash.write(_ERASED)
    _flash.flush()


def freemem():
    return gc.mem_free()


def meminfo():
    print("heap:", gc.mem_free(), "free")


def sleep_type(t=None):
    return SLEEP_NONE if t is None else None


def check_fw():
    return True
