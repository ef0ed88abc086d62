# Updates over Wi-Fi (`espblink deploy --ota`): loaded only while an update is asked for or received,
# and at start while a new app is on trial. Handed what it needs; it imports nothing of the app.
#
# GET  /api/ota: what the host needs to plan (the mode: app or update, board id, .mpy version, last sequence
#      number, the deploy key's name, each file's sha256, a rollback report, the ROMFS partition).
# POST /api/ota: body "SEQ LENGTH SHA256 HMAC" (HMAC-SHA256 with the board's deploy key over
#      "espblink-ota BOARD-ID SEQ LENGTH SHA256"); SEQ must be above the last one accepted (no replay). The board
#      answers "101 Switching Protocols", then reads LENGTH bytes (the update: "put NAME SIZE\n" + SIZE
#      bytes, "del NAME\n", or "rom SIZE\n" + the ROMFS image, repeated) to a file in chunks, checks its
#      SHA256, unpacks it beside the app, and swaps the files in by renames under a journal (ota.state),
#      keeping the old ones in ota-files/old/. Its verdict is one last line: "OK ..." (then it restarts)
#      or "ERR CODE ...".
# At start, boot() finishes a swap cut by a power loss (a new ROMFS image is written then, from boot.py,
# while no code runs from the partition), counts the new app's boots and puts the old app back (files
# and image) after 3 crashes in a row, or once the new app did not serve within 30 s (boot.py's timer marks
# the journal "hung"). boot.py counts the plain trial starts itself and loads this only for the rest; the
# app keeps the new app after 30 s by removing the journal; confirm() (a signed update answered on trial)
# also drops the old copy.
import gc
import hashlib
import os

KEY = "ota.key"  # 64 hex digits: written by the first USB deploy; none: updates over Wi-Fi are off
SEQ = "ota.seq"  # the last sequence number accepted: a request must carry a higher one
STATE = "ota.state"  # the journal: "switch", "trial N" or "rollback", then "rom|put|del NAME EXISTED" lines
# (and "hung" once boot.py's timer fired)
LAST = "ota.last"  # what went wrong with the last update (a rollback), until a deploy reads it
IMG = "ota.img"
DIR = "ota-files"  # not a name import could take for a package
NEW = DIR + "/new/"
OLD = DIR + "/old/"
TRIES = 3  # a new app that crashes this many times in a row is replaced by the old one
IDLE_S = 2  # the most one read of the update may wait; the watchdog bites after 3.2 s
PROTOCOL = b"espblink-ota"
ROM = "rom.img"  # in NEW and OLD: the ROMFS image, new and previous
ROM_MAGIC = b"\xd2\xcd\x31"  # a ROMFS image's first bytes (mpremote's romfs writer)


def _segment():
    # The ROMFS partition (a memoryview over the flash), or None on a board without one.
    try:
        import vfs

        if vfs.rom_ioctl(1) > 0:
            return vfs.rom_ioctl(2, 0)
    except (ImportError, AttributeError, OSError):
        pass
    return None


def _image_size(seg):
    # The size of the valid image at the start of the partition, or 0.
    if seg is None or bytes(seg[:3]) != ROM_MAGIC:
        return 0
    n = 0
    i = 3
    while i < 8:
        b = seg[i]
        n = n << 7 | b & 0x7F
        i += 1
        if not b & 0x80:
            return i + n
    return 0


def _write_rom(name, buf):
    # Erases the partition and writes the image file into it, its first chunk (the header) last: until
    # then the partition holds no valid image.
    import vfs

    try:
        vfs.umount("/rom")
    except OSError:
        pass
    seg = _segment()
    if name is None:
        vfs.rom_ioctl(3, 0, len(seg))
        return
    size = os.stat(name)[6]
    if size > len(seg):
        raise OSError(28)
    r = vfs.rom_ioctl(3, 0, size)
    if r < 0:
        raise OSError(-r)
    mv = memoryview(buf)
    with open(name, "rb") as f:
        at = len(buf)
        f.seek(at)
        while at < size:
            n = _chunk(f, buf)
            vfs.rom_ioctl(4, 0, at, mv[:n])
            at += n
        f.seek(0)
        vfs.rom_ioctl(4, 0, 0, mv[:_chunk(f, buf)])
    d = hashlib.sha256()
    d.update(seg[:size])
    if _hex(d.digest()) != _sha_file(name, buf):
        raise OSError(5)


def _chunk(f, buf):
    # The next piece of the file, made whole 4-byte words (flash is written in words) with 0xFF, which
    # leaves erased bits as they are.
    n = f.readinto(buf)
    while n & 3:
        buf[n] = 0xFF
        n += 1
    return n


def _mount_rom():
    # As the firmware does at start: a valid image is mounted at /rom, where the app's code is looked for.
    seg = _segment()
    if _image_size(seg):
        import vfs

        try:
            vfs.mount(vfs.VfsRom(seg), "/rom")
        except OSError:
            pass


def _exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _read(name):
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _write(name, data):
    # Under a temporary name, then renamed: a power cut leaves the old file or the new one.
    with open(name + ".tmp", "wb") as f:
        f.write(data)
    os.rename(name + ".tmp", name)


def _remove(name):
    try:
        os.remove(name)
    except OSError:
        pass


def _clear(folder):
    # Empties NEW or OLD (made if missing).
    for d in (DIR, folder[:-1]):
        try:
            os.mkdir(d)
        except OSError:
            pass
    for n in os.listdir(folder[:-1]):
        os.remove(folder + n)


def hmac(key, msg):
    # HMAC-SHA256 (RFC 2104): the board has hashlib.sha256 but no hmac module.
    k = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))
    outer.update(inner.digest())
    return outer.digest()


def _hex(b):
    import binascii

    return binascii.hexlify(b)


def _sha_file(name, buf, feed=None):
    d = hashlib.sha256()
    mv = memoryview(buf)
    with open(name, "rb") as f:
        n = f.readinto(buf)
        while n:
            if feed:
                feed()
            d.update(mv[:n])
            n = f.readinto(buf)
    return _hex(d.digest())


def _key():
    k = _read(KEY).strip()
    if len(k) != 64:
        return None
    import binascii

    try:
        return binascii.unhexlify(k)
    except ValueError:
        return None


def _board_id():
    # The MAC address in hex: an update signed for one board is refused by another with the same key.
    import network

    return _hex(network.WLAN(network.STA_IF).config("mac"))


def _key_id():
    # The key's public name: the start of its SHA-256 ("-": no key), by which the host finds it.
    k = _key()
    return _hex(hashlib.sha256(k).digest())[:16] if k else b"-"


def _journal():
    # (phase line, [(b"put"|b"del", name, existed)]) from ota.state. A "hung" line (boot.py's timer: the app
    # on trial did not serve in time) makes the phase "hung".
    lines = _read(STATE).split(b"\n")
    ops = []
    for line in lines[1:]:
        w = line.split()
        if len(w) >= 3:
            ops.append((w[0], w[1].decode(), w[2] == b"1"))
        elif line == b"hung" and lines[0].startswith(b"trial"):
            lines[0] = line
    return lines[0], ops


def _set_phase(phase, ops):
    parts = [phase]
    for op, name, existed in ops:
        parts.append(b"%s %s %d" % (op, name.encode(), existed))
    _write(STATE, b"\n".join(parts) + b"\n")


def _flat(name):
    # A name's file in NEW or OLD: lib/app.mpy is lib%app.mpy there.
    return name.replace("/", "%")


def _switch(ops, buf):
    # Swaps the new files in, the old ones kept in OLD. Run again after a power cut, it goes on
    # from where it stopped: each step is one rename, done only while its source is still there. A new
    # ROMFS image is written only from boot(): the running app's code may be in the partition.
    for op, name, existed in ops:
        if op == b"rom":
            seg = _segment()
            size = _image_size(seg)
            if existed and size and not _exists(OLD + ROM):  # the previous image, kept for a rollback
                with open(OLD + ROM + ".tmp", "wb") as f:
                    f.write(seg[:size])
                os.rename(OLD + ROM + ".tmp", OLD + ROM)
            if _exists(NEW + ROM):
                _write_rom(NEW + ROM, buf)
                os.remove(NEW + ROM)
        elif op == b"put":
            if _exists(NEW + _flat(name)):
                if _exists(name):
                    os.rename(name, OLD + _flat(name))
                os.rename(NEW + _flat(name), name)
        elif _exists(name):
            os.rename(name, OLD + _flat(name))


def _rollback(ops, why, buf):
    # The old app back, file by file and its image; run again after a power cut, it goes on where it
    # stopped.
    _write(LAST, why.encode())
    _set_phase(b"rollback", ops)
    for op, name, existed in ops:
        if op == b"rom":
            if existed and _exists(OLD + ROM):
                _write_rom(OLD + ROM, buf)
                os.remove(OLD + ROM)
            elif not existed:
                _write_rom(None, buf)
        elif op == b"del" or existed:
            if _exists(OLD + _flat(name)):
                try:
                    os.remove(name)
                except OSError:
                    pass
                os.rename(OLD + _flat(name), name)
        else:
            _remove(name)
    _remove("crashes.txt")  # the old app's boot-loop guard starts again
    os.remove(STATE)
    print("espblink: update rolled back:", why)


def boot():
    # At start, while ota.state exists, from boot.py before any module of the app is imported, and with
    # /rom unmounted (this module then comes from the filesystem: it may rewrite the partition). Mounts
    # /rom again. Returns True when the old app was put back.
    try:
        return _boot(bytearray(1024))
    finally:
        _mount_rom()


def _boot(buf):
    phase, ops = _journal()
    w = phase.split()
    if not w:
        _remove(STATE)
        return False
    if w[0] == b"rollback":
        _rollback(ops, _read(LAST).decode() or "the new app did not start", buf)
        return True
    if w[0] == b"hung":
        _rollback(ops, "the new app did not serve within 30 s of its start (it hung): the previous app runs again; "
                  "fix it and deploy again", buf)
        return True
    if w[0] == b"switch":
        _switch(ops, buf)
        w = [b"trial", b"0"]
    n = int(w[1]) + 1
    if n > TRIES:
        _rollback(ops, "the new app crashed %d times in a row: the previous app runs again; fix it and deploy "
                  "again" % TRIES, buf)
        return True
    _set_phase(b"trial %d" % n, ops)
    print("espblink: new app on trial (start %d of %d); it is kept once it has run 30 s" % (n, TRIES))
    return False


def confirm():
    # The new app ran 30 s: it is kept, the old copy and the update file go.
    if not _exists(STATE):
        return
    phase, ops = _journal()
    if not phase.startswith(b"trial"):
        return
    os.remove(STATE)
    _clear(OLD)
    _remove(IMG)
    print("espblink: update confirmed")


class Refused(Exception):
    # args: status line, message
    pass


def _begin(body, feed):
    # Checks the signed first request; returns (length, sha256 hex) or raises Refused (nothing written).
    # feed: the watchdog's, between the flash operations.
    key = _key()
    if key is None:
        raise Refused(b"403 Forbidden", "updates over Wi-Fi are off: this board has no deploy key; deploy once "
                      "over USB (make deploy) to set one")
    w = bytes(body).split()
    if len(w) != 4 or len(w[0]) != 16 or not w[0].isdigit() or not w[1].isdigit() or len(w[2]) != 64:
        raise Refused(b"400 Bad Request", "malformed update request")
    seq, length, sha, mac = w
    good = _hex(hmac(key, b"%s %s %s %s %s" % (PROTOCOL, _board_id(), seq, length, sha)))
    diff = len(mac) ^ len(good)
    for i in range(min(len(mac), len(good))):
        diff |= mac[i] ^ good[i]
    if diff:
        print("espblink: update refused: bad signature (wrong deploy key?)")
        raise Refused(b"403 Forbidden", "bad signature: the deploy key is not this board's")
    if seq <= _read(SEQ).strip():
        print("espblink: update refused: replayed request (sequence %s)" % seq.decode())
        raise Refused(b"403 Forbidden", "replayed request: sequence number already used")
    if feed:
        feed()
    _write(SEQ, seq)  # used up now, whatever happens next
    _remove(LAST)  # the host has read it
    # A new app on trial that answers a signed update serves: it is kept, and becomes the one to go back to.
    confirm()
    if feed:
        feed()
    if _exists(STATE):
        raise Refused(b"409 Conflict", "the previous update is not in place yet (the board's boot.py has no update "
                      "step): deploy over USB")
    length = int(length)
    st = os.statvfs("/")
    free = st[0] * st[3]
    need = 3 * length + 8192  # the update, what it unpacks to, the old image kept for a rollback
    if free < need:
        raise Refused(b"507 Insufficient Storage", "not enough flash: %d bytes free, the update needs %d"
                      % (free, need))
    return length, sha


def _receive(sock, buf, length, feed):
    # The update, in chunks of the slot's buffer, to ota.img; returns its sha256 (hex) read back from flash.
    mv = memoryview(buf)
    sock.settimeout(IDLE_S)
    got = 0
    with open(IMG, "wb") as f:
        while got < length:
            if feed:
                feed()
            try:
                n = sock.readinto(mv[:min(len(buf), length - got)])
            except OSError:
                n = 0
            if not n:
                raise Refused(b"408 Request Timeout", "the update stopped after %d of %d bytes" % (got, length))
            f.write(mv[:n])
            got += n
    return _sha_file(IMG, buf, feed)


def _unpack(buf, feed):
    # ota.img's files to NEW; returns the journal's operations.
    _clear(NEW)
    _clear(OLD)
    ops = []
    mv = memoryview(buf)
    with open(IMG, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return ops
            w = line.split()
            if w[0] == b"rom" and len(w) == 2:
                name = ROM
                seg = _segment()
                if seg is None or int(w[1]) > len(seg):
                    raise Refused(b"507 Insufficient Storage", "this board has no ROMFS partition that big")
                w.insert(1, b"")
            else:
                name = w[1].decode() if len(w) > 1 else ""
                if not name or name[0] == "/" or ".." in name or "%" in name or name in (KEY, SEQ, STATE, LAST, IMG) or (
                        name.startswith(DIR) or "/" in name and not name.startswith("lib/")):
                    raise Refused(b"400 Bad Request", "bad file name in the update: %s" % name)
            if w[0] == b"del" and len(w) == 2:
                ops.append((b"del", name, True))
                continue
            if w[0] not in (b"put", b"rom") or len(w) != 3:
                raise Refused(b"400 Bad Request", "malformed update")
            n = int(w[2])
            with open(NEW + _flat(name), "wb") as o:
                while n:
                    if feed:
                        feed()
                    k = f.readinto(mv[:min(n, len(buf))])
                    if not k:
                        raise Refused(b"400 Bad Request", "update shorter than its file sizes")
                    o.write(mv[:k])
                    n -= k
            if w[0] == b"rom":
                ops.insert(0, (b"rom", ROM, bool(_image_size(_segment()))))
            else:
                if "/" in name:
                    try:
                        os.mkdir(name[:name.find("/")])
                    except OSError:
                        pass
                ops.append((b"put", name, _exists(name)))


def handle(app, req, mode=b"app"):
    # GET or POST /api/ota, for the app (which unloads this module after it) or update mode (otamode.py).
    import time

    if req.method == b"GET":
        info(req, mode, app.wdt.feed)
    elif update(req, app.wdt.feed):
        app.restart_at = time.ticks_add(time.ticks_ms(), 300)


def answer(sock, status, text):
    # A plain-text answer and its line of text, written here: update mode (otamode.py) has no server module.
    sock.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n" % (status, len(text) + 1))
    sock.write(text)
    sock.write(b"\n")


def update(req, feed=None):
    # POST /api/ota. Returns True when the new app is in place and the board must restart.
    sock = req.sock
    try:
        length, sha = _begin(req.body, feed)
    except Refused as e:
        answer(sock, e.args[0], e.args[1].encode())
        return False
    sock.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: espblink-ota\r\nConnection: Upgrade\r\n\r\n")
    buf = req.buf  # the request in it has been read: its 1 KiB carries the update's chunks
    try:
        got = _receive(sock, buf, length, feed)
        if got != sha:
            print("espblink: update refused: SHA-256 mismatch")
            raise Refused(b"400 Bad Request", "the update arrived damaged (SHA-256 mismatch): nothing changed")
        ops = _unpack(buf, feed)
        _remove(IMG)
        _set_phase(b"switch", ops)  # from here a power cut finishes the swap at the next start
        if ops[0][0] != b"rom":  # an image is written at the next start, before its code runs
            _switch(ops, buf)
            _set_phase(b"trial 0", ops)
    except Refused as e:
        _remove(IMG)
        sock.write(b"ERR %s %s\n" % (e.args[0][:3], e.args[1]))
        return False
    except OSError as e:
        _remove(IMG)
        sock.write(b"ERR 500 flash error (%s): nothing changed\n" % str(e).encode())
        return False
    sock.write(b"OK %d bytes, %d files: restarting into the new app\n" % (length, len(ops)))
    print("espblink: update received (%d bytes): restarting" % length)
    return True


def _lines(name):
    # A small text file's lines, one at a time (none if it is missing).
    try:
        f = open(name, "rb")
    except OSError:
        return
    with f:
        for line in f:
            if line.strip():
                yield line


def info(req, mode=b"app", feed=None):
    # GET /api/ota: "key value" lines, the last deploy's record as "deployed NAME SHA256" lines, then
    # "file NAME SHA256" for each file, hashed while it is sent.
    import sys

    v = sys.implementation._mpy
    seg = _segment()
    size = _image_size(seg)
    rom = b"-"
    if size:
        d = hashlib.sha256()
        d.update(seg[:size])
        rom = _hex(d.digest())
    head = b"mode %s\nid %s\nmpy %d.%d\nseq %s\nkey %s\nstate %s\nlast %s\nrom %d %s\n" % (
        mode, _board_id(), v & 0xFF, v >> 8 & 3, _read(SEQ).strip() or b"0", _key_id(),
        _read(STATE).split(b"\n")[0] or b"idle", _read(LAST).replace(b"\n", b" "), len(seg) if seg else 0, rom)
    size = len(head)
    for line in _lines(".deployed"):
        size += 9 + len(line.strip()) + 1
    names = []
    for p in ("", "lib/"):
        try:
            found = os.listdir(p[:-1]) if p else os.listdir()
        except OSError:
            found = ()
        for n in found:
            if os.stat(p + n)[0] & 0x8000:
                names.append(p + n)
                size += len(p + n) + 71
    sock = req.sock
    sock.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
               b"Connection: close\r\nCache-Control: no-store\r\n\r\n" % size)
    sock.write(head)
    for line in _lines(".deployed"):
        sock.write(b"deployed ")
        sock.write(line.strip())
        sock.write(b"\n")
    for n in names:
        sock.write(b"file %s %s\n" % (n.encode(), _sha_file(n, req.buf, feed)))
    gc.collect()
