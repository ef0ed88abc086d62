# Home Assistant over MQTT: the board as a client of the home's broker, served from the app's one loop.
# umqtt.simple (frozen in the firmware: its code stays in flash) writes what the board publishes. Its
# connect() and wait_msg() block, and wait_msg() reads a whole payload into one new object, so the TCP
# connect, the login and every incoming packet are handled here instead, a piece at a time: a socket
# that is not ready never holds up the loop, and a payload too long for the buffer is skipped unread.
import gc
import sys
import time

import network
import socket
from micropython import const
from umqtt.simple import MQTTClient

_OFF = const(0)  # no home Wi-Fi (or MQTT not set): nothing to do
_WAIT = const(1)  # until self.at, then a new try
_TCP = const(2)  # TCP connect under way
_LOGIN = const(3)  # CONNECT sent, CONNACK awaited
_UP = const(4)
_STATES = ("no home Wi-Fi", "waiting", "connecting", "logging in", "connected")

_KEEPALIVE_S = const(60)
_PING_MS = const(30000)
_SILENT_MS = const(90000)  # nothing heard for 1.5 keepalives: the link is gone
_CONNECT_MS = const(5000)  # TCP connect and CONNACK, each
_STABLE_MS = const(60000)  # a connection that lasted this long starts the backoff over
_BACKOFF_MAX_S = const(60)
_INFO_MS = const(60000)
_WRITE_S = 0.05  # the most one write may wait for the broker: the loop answers HTTP in 100 ms
_EAGAIN = const(11)
_EINPROGRESS = const(115)
# CONNACK return codes 1 to 5 (MQTT 3.1.1, 3.2.2.3)
_REFUSED = ("protocol version", "client id", "broker unavailable", "wrong mqtt_user or mqtt_password",
            "wrong mqtt_user or mqtt_password, or not allowed")


class MQTT:
    # cfg: the settings (mqtt_* keys, hostname); lights: the LEDs; add(sock, handler) and drop(sock) put a
    # socket in and out of the server's poll; version: the app's version; changed(): called after a
    # command switched an LED (as the page's changes do).
    def __init__(self, cfg, lights, add, drop, version, changed=None):
        self.cfg = cfg
        self.lights = lights
        self.add = add
        self.drop = drop
        self.version = version
        self.changed = changed
        self.sta = network.WLAN(network.STA_IF)
        mac = self.sta.config("mac")
        self.id = "%02x%02x%02x%02x%02x%02x" % tuple(mac)
        self.prefix = (cfg["mqtt_prefix"] or "espblink/" + self.id).encode()
        self.broker = "%s:%d" % (cfg["mqtt_host"], cfg["mqtt_port"])
        self.c = MQTTClient("espblink-" + self.id, cfg["mqtt_host"], cfg["mqtt_port"],
                            cfg["mqtt_user"] or None, cfg["mqtt_password"], _KEEPALIVE_S)
        self.c.set_last_will(self.prefix + b"/status", b"offline", True)
        self.addr = None  # the broker's address, looked up once
        self.sock = None
        self.state = _OFF
        self.problem = None
        self.at = self.heard = self.pinged = self.since = self.told = 0
        self.backoff = 1
        self.t0 = time.ticks_ms()
        self.buf = bytearray(160)  # an incoming packet: a command, or a topic whose long payload is skipped
        self.mv = memoryview(self.buf)
        self.n = 0  # bytes in buf
        self.skip = 0  # bytes of a long packet still to discard
        self.shown = bytearray(len(lights))  # per LED: the state last published (0 off, 1 on, 2 not yet)

    def tick(self):
        # From the app's loop: connects, pings, publishes what changed. A heap too full for a packet costs
        # the connection, never the app.
        try:
            self._tick()
        except MemoryError:
            self._lost("not enough free heap")

    def _tick(self):
        now = time.ticks_ms()
        st = self.state
        if st == _UP:
            if time.ticks_diff(now, self.heard) > _SILENT_MS:
                self._lost("no answer from the broker")
            elif time.ticks_diff(now, self.pinged) >= _PING_MS:
                self.pinged = now
                if self.sta.isconnected():
                    self._write(b"\xc0\0")
                else:
                    self._lost("home Wi-Fi lost")
            elif time.ticks_diff(now, self.told) >= _INFO_MS:
                self._info(now)
            else:
                self._states()
        elif st == _OFF:
            if self.sta.isconnected():
                self._connect()
        elif st == _WAIT:
            if time.ticks_diff(now, self.at) >= 0:
                self._connect()
        elif time.ticks_diff(now, self.at) >= 0:
            self._lost("no answer within %d s" % (_CONNECT_MS // 1000))
        elif st == _TCP:
            self._login()

    def _connect(self):
        if not self.sta.isconnected():
            self.state = _OFF
            return
        try:
            if self.addr is None:
                self.addr = socket.getaddrinfo(self.cfg["mqtt_host"], self.cfg["mqtt_port"])[0][-1]
            self.sock = socket.socket()
            self.sock.setblocking(False)
            try:
                self.sock.connect(self.addr)
            except OSError as e:
                if e.args[0] != _EINPROGRESS:
                    raise
        except OSError as e:
            self._lost("cannot connect (%s)" % e)
            return
        self.n = self.skip = 0
        self.add(self.sock, self._read)  # a refused connection shows here at once
        self.state = _TCP
        self.at = time.ticks_add(time.ticks_ms(), _CONNECT_MS)

    def _login(self):
        # The CONNECT packet, written once the TCP connection is up (until then the write is refused
        # with EAGAIN, here and in lwIP).
        c = self.c
        body = bytearray(b"\0\x04MQTT\x04\x26\0\0")  # clean session, a retained will, QoS 0
        body[9] = _KEEPALIVE_S
        _str(body, c.client_id)
        _str(body, c.lw_topic)
        _str(body, c.lw_msg)
        if c.user:
            body[7] |= 0xC0
            _str(body, c.user)
            _str(body, c.pswd)
        head = bytearray(b"\x10")
        _len(head, len(body))
        try:
            n = self.sock.write(head + body)
        except OSError as e:
            if e.args[0] != _EAGAIN:
                self._lost("cannot connect (%s)" % e)
            return
        if n is None:
            return
        self.sock.settimeout(_WRITE_S)
        self.state = _LOGIN

    def _lost(self, why):
        # Closes the connection and schedules the next try: 1, 2, 4 ... 60 s after failures in a row.
        if self.sock:
            self.drop(self.sock)
            self.sock.close()
            self.sock = self.c.sock = None
        if self.state == _UP and time.ticks_diff(time.ticks_ms(), self.since) >= _STABLE_MS:
            self.backoff = 1
        self.problem = why
        self.state = _WAIT
        self.at = time.ticks_add(time.ticks_ms(), self.backoff * 1000)
        print("espblink: MQTT %s: %s; trying again in %d s" % (self.broker, why, self.backoff))
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_S)

    def _up(self):
        now = time.ticks_ms()
        self.state = _UP
        self.problem = None
        self.heard = self.pinged = self.since = now
        self.c.sock = self.sock
        p = self.prefix
        # One SUBSCRIBE: the LEDs' commands, Home Assistant's restarts, this board's availability (a
        # stale will may land after a restart) and its discovery configs (to clear a renamed LED's).
        body = bytearray(b"\0\1")
        for t in (p + b"/+/set", b"homeassistant/status", p + b"/status", b"homeassistant/light/%s/+/config" % self.id):
            _str(body, t)
            body.append(0)
        head = bytearray(b"\x82")
        _len(head, len(body))
        if self._write(head + body):
            print("espblink: MQTT connected to %s, topics %s/..." % (self.broker, p.decode()))
            self._announce()

    def _announce(self):
        # Discovery, availability and every state, as Home Assistant asks after it (re)starts.
        for led in self.lights:
            self._pub(b"homeassistant/light/%s/%s/config" % (self.id, led.name), self._config(led))
        for i in range(len(self.shown)):
            self.shown[i] = 2
        self._info(time.ticks_ms())
        # Last: whoever sees the board online finds this run's info (its address), not the last run's.
        self._pub(self.prefix + b"/status", b"online")

    def _config(self, led):
        # Home Assistant's MQTT light, in its abbreviated keys (fewer bytes to build and send).
        return (b'{"~":"%s","name":"%s","uniq_id":"espblink_%s_%s","cmd_t":"~/%s/set","stat_t":"~/%s/state",'
                b'"avty_t":"~/status","dev":{"ids":["espblink_%s"],"name":"%s","mdl":"NodeMCU ESP8266","sw":"%s",'
                b'"cu":"http://%s/"}}') % (self.prefix, led.name, self.id, led.name, led.name, led.name, self.id,
                                          self.cfg["hostname"], self.version, self.sta.ifconfig()[0])

    def _states(self):
        # Every path that changes an LED (page, API, button, blink, MQTT) ends here: published once each.
        for i, led in enumerate(self.lights):
            on = 1 if led.blink_ms or led.is_on() else 0
            if self.shown[i] != on and self.state == _UP:
                self.shown[i] = on
                self._pub(b"%s/%s/state" % (self.prefix, led.name), b"ON" if on else b"OFF")

    def _info(self, now):
        # For `espblink boards`: who this board is and how it is, retained, once a minute.
        self._states()
        self.told = now
        gc.collect()
        v = sys.implementation.version
        leds = b",".join(b'"%s":"%s"' % (led.name, b"ON" if self.shown[i] else b"OFF")
                         for i, led in enumerate(self.lights))
        self._pub(self.prefix + b"/info", (
            b'{"id":"%s","name":"%s","prefix":"%s","firmware":"%d.%d.%d","version":"%s","address":"%s",'
            b'"heap_free":%d,"uptime_s":%d,"leds":{%s}}') % (
            self.id, self.cfg["hostname"], self.prefix, v[0], v[1], v[2], self.version, self.sta.ifconfig()[0],
            gc.mem_free(), time.ticks_diff(now, self.t0) // 1000, leds))

    def _pub(self, topic, msg):
        if self.state == _UP:
            try:
                self.c.publish(topic, msg, True)
            except OSError:
                self._lost("the broker stopped reading")

    def _write(self, data):
        try:
            self.sock.write(data)
            return True
        except OSError:
            self._lost("the broker stopped reading")
            return False

    def _read(self):
        try:
            self._take()
        except MemoryError:
            self._lost("not enough free heap")

    def _take(self):
        # The socket is readable (or closed): what arrived is added to the buffer and every whole packet
        # in it handled.
        s = self.sock
        try:
            # Non-blocking while it reads (a read with a timeout waits to fill the buffer), bounded while
            # it writes.
            s.setblocking(False)
            got = s.readinto(self.mv[self.n:])
            if self.state != _TCP:
                s.settimeout(_WRITE_S)
        except OSError as e:
            self._lost("connection refused" if self.state == _TCP else "connection lost (%s)" % e)
            return
        if got is None:
            return
        if not got:
            self._lost("the broker closed the connection")
            return
        self.heard = time.ticks_ms()
        n = self.n + got
        b = self.buf
        while n and self.sock:
            if self.skip:
                k = min(self.skip, n)
                self.skip -= k
            else:
                # Fixed header: type, then the remaining length in 1 to 4 bytes of 7 bits.
                i = 1
                size = sh = 0
                while i < n:
                    size |= (b[i] & 0x7F) << sh
                    sh += 7
                    i += 1
                    if not b[i - 1] & 0x80:
                        break
                    if i > 4:
                        self._lost("malformed packet from the broker")
                        return
                else:
                    break
                total = i + size
                k = total
                if total <= len(b):
                    if n < total:
                        break
                    self._packet(i, total)
                elif b[0] >> 4 == 3:
                    # A PUBLISH too long to keep: its topic is read if it fits, the rest skipped.
                    if n < i + 2:
                        break
                    end = i + 2 + (b[i] << 8 | b[i + 1])
                    if end <= len(b):
                        if n < end:
                            break
                        self._message(bytes(b[i + 2:end]), None)
                if total > n:
                    self.skip = total - n
                    k = n
            b[:n - k] = self.mv[k:n]
            n -= k
        self.n = n

    def _packet(self, i, total):
        b = self.buf
        kind = b[0] >> 4
        if kind == 3:
            end = i + 2 + (b[i] << 8 | b[i + 1])
            if end <= total:
                # A QoS 1 message carries a packet id before the payload; the board subscribes at QoS 0.
                self._message(bytes(b[i + 2:end]), bytes(b[end + (2 if b[0] & 6 else 0):total]))
        elif kind == 2 and self.state == _LOGIN:
            rc = b[3] if total >= 4 else 1
            if rc:
                self._lost("login refused: %s" % (_REFUSED[rc - 1] if rc <= 5 else "code %d" % rc))
            else:
                self._up()

    def _message(self, topic, msg):
        # msg None: a payload too long to read (skipped).
        p = self.prefix
        if topic.startswith(p + b"/") and topic.endswith(b"/set"):
            led = None
            name = topic[len(p) + 1:-4]
            for x in self.lights:
                if x.name.encode() == name:
                    led = x
            on = _onoff(msg)
            if led is not None and on is not None:
                led.set(on)
                if self.changed:
                    self.changed()
                self._states()
        elif topic == b"homeassistant/status":
            if msg == b"online":
                self._announce()
        elif topic == p + b"/status":
            if msg == b"offline":  # a will from an earlier connection, landed late
                self._pub(topic, b"online")
        elif msg != b"" and topic.startswith(b"homeassistant/light/"):
            # A discovery config of this board (its topic says so) for an LED it no longer has.
            name = topic[len(b"homeassistant/light/") + len(self.id) + 1:-7]
            for x in self.lights:
                if x.name.encode() == name:
                    return
            self._pub(topic, b"")

    def write_json(self, w):
        # For /api/status: {"broker":..,"prefix":..,"state":..,"problem":..}
        w(b'{"broker":"%s","prefix":"%s","state":"%s","problem":' % (self.broker, self.prefix, _STATES[self.state]))
        w(b'"%s"}' % self.problem if self.problem else b"null}")


def _onoff(msg):
    # ON/OFF, or Home Assistant's JSON schema {"state": "ON"}; None: neither.
    if msg is None or len(msg) > 64:
        return None
    msg = msg.strip()
    if msg == b"ON" or msg == b"OFF":
        return msg == b"ON"
    if msg[:1] == b"{":
        on = b'"ON"' in msg
        if on != (b'"OFF"' in msg):
            return on
    return None


def _str(buf, s):
    # An MQTT string: 16-bit length, then the bytes.
    if isinstance(s, str):
        s = s.encode()
    buf.append(len(s) >> 8)
    buf.append(len(s) & 0xFF)
    buf.extend(s)


def _len(buf, n):
    # MQTT's remaining length: 7 bits a byte, lowest first.
    while True:
        if n > 0x7F:
            buf.append(n & 0x7F | 0x80)
            n >>= 7
        else:
            buf.append(n)
            return
