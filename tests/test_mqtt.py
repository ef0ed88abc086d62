"""Home Assistant over MQTT, on the virtual NodeMCU joined to home Wi-Fi, against a real Mosquitto: a
paho-mqtt client plays Home Assistant (discovery, commands, state, its restarts), the broker goes away
and comes back, a wrong password, junk on the board's topics, five boards on one broker and
`espblink boards`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from device_support import VALID, App
from espblink import image
from mqtt_support import HOME, HOME_KEY, STA, HomeAssistant, board_settings, broker
from nodemcu import runtime
from nodemcu.board import NodeMCU
from sim_support import ESPBLINK, running_sim

SIZE = 4 * 1024 * 1024
BOARD_IP = "192.168.1.50"  # the virtual board's address on home Wi-Fi
USER, PASSWORD = "ha", "broker secret 1"
# A NodeMCU (4 MB) as `make flash deploy` leaves it: the FLASH_2M_ROMFS build, the code in ROMFS, the
# board's own heap. (MQTT's code as .mpy files does not fit the 38,912 B heap next to the app's.)
VARIANT = "FLASH_2M_ROMFS"
HEAP = None


def write_settings(path: Path, b, **extra: object) -> Path:  # noqa: ANN001
    return board_settings(path, b, USER, PASSWORD, **extra)


def deploy(sim, path: Path) -> None:  # noqa: ANN001
    r = subprocess.run([*ESPBLINK, "deploy", "--port", sim.serial, "--settings", str(path)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr


def get(sim, path: str, timeout: float = 5) -> dict:  # noqa: ANN001
    with urllib.request.urlopen(sim.http + path, timeout=timeout) as r:
        return json.loads(r.read())


def post(sim, path: str, data: dict) -> int:  # noqa: ANN001
    req = urllib.request.Request(sim.http + path, json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Espblink": "1"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def online(ha: HomeAssistant, prefix: str) -> bool:
    return ha.last.get(f"{prefix}/status") == b"online"


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    """One board on home Wi-Fi with MQTT set to a broker that wants a password; Home Assistant on it."""
    tmp = tmp_path_factory.mktemp("mqtt")
    state = tmp / "board"
    state.mkdir()
    fw = image.make(variant=VARIANT)
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    with broker(tmp / "broker", users={USER: PASSWORD}) as b:
        path = write_settings(tmp / "settings.toml", b)
        with running_sim(state, heap=HEAP, extra=STA) as sim:
            deploy(sim, path)
            ha = HomeAssistant(b, USER, PASSWORD)
            info = ha.wait(lambda h: [t for t in h.retained if t.startswith("espblink/") and t.endswith("/info")],
                           what="the board's info")
            sim.broker, sim.ha, sim.settings_path, sim.tmp = b, ha, path, tmp
            sim.prefix = info[0][:-len("/info")]
            sim.id = json.loads(ha.retained[info[0]])["id"]
            sim.cfg = tomllib.loads(path.read_text())
            ha.wait(lambda h: online(h, sim.prefix), what="the board online")
            yield sim
            ha.close()


def test_home_assistant_discovers_one_light_per_led(mq):
    ha = mq.ha
    configs = ha.wait(lambda h: len(h.configs(mq.id)) == 2 and h.configs(mq.id), what="two discovery configs")
    assert set(configs) == {"blue", "red"}
    for name, c in configs.items():
        base = c["~"]
        assert base == mq.prefix == f"espblink/{mq.id}"
        assert c["name"] == name and c["uniq_id"] == f"espblink_{mq.id}_{name}"
        assert c["cmd_t"] == f"~/{name}/set" and c["stat_t"] == f"~/{name}/state" and c["avty_t"] == "~/status"
        dev = c["dev"]
        assert dev["ids"] == [f"espblink_{mq.id}"] and dev["mdl"] == "NodeMCU ESP8266"
        assert dev["name"] == get(mq, "api/status")["hostname"] and dev["sw"]
        assert dev["cu"] == f"http://{BOARD_IP}/"
        assert ha.retained[f"{base}/{name}/state"] in (b"ON", b"OFF")
    assert ha.retained[f"{mq.prefix}/status"] == b"online"
    st = get(mq, "api/status")["mqtt"]
    assert st["state"] == "connected" and st["problem"] is None and st["prefix"] == mq.prefix
    text = json.dumps(get(mq, "api/status"))
    assert "mqtt_password" not in text and PASSWORD not in text


def test_a_command_reaches_the_led_within_200_ms_and_its_state_is_published(mq):
    ha = mq.ha
    for on in (True, False, True, False):
        start = len(mq.console)
        t0 = time.monotonic()
        ha.publish(f"{mq.prefix}/blue/set", "ON" if on else "OFF")
        want = "blue LED on" if on else "blue LED off"
        while not any(want in ln for ln in mq.console[start:]):
            assert time.monotonic() - t0 < 5, mq.console[start:]
            time.sleep(0.002)
        assert time.monotonic() - t0 < 0.2
        ha.wait(lambda h, on=on: h.last.get(f"{mq.prefix}/blue/state") == (b"ON" if on else b"OFF"), timeout=2,
                what="the new state")
    ha.publish(f"{mq.prefix}/red/set", '{"state": "ON"}')  # Home Assistant's JSON schema
    mq.wait_state(lambda s: s["leds"]["red"] is True, timeout=5)
    ha.publish(f"{mq.prefix}/red/set", "OFF")
    mq.wait_state(lambda s: s["leds"]["red"] is False, timeout=5)


def test_every_change_from_the_page_and_api_is_published_once(mq):
    ha = mq.ha
    topic = f"{mq.prefix}/red/state"
    assert post(mq, "api/leds/red", {"on": False}) == 200
    ha.wait(lambda h: h.last.get(topic) == b"OFF", timeout=5)

    def published(action: dict, want: bytes) -> None:
        n = len(ha.seen)
        assert post(mq, "api/leds/red", action) == 200
        ha.wait(lambda h: h.last.get(topic) == want, timeout=5, what=f"red {want!r}")
        time.sleep(1.2)  # a second message, if there were one, has come by now
        assert [p for t, p, _ in ha.seen[n:] if t == topic] == [want]

    published({"on": True}, b"ON")
    published({"toggle": True}, b"OFF")
    published({"blink_ms": 400}, b"ON")  # blinking is on, however often the LED flips
    published({"blink_ms": 0}, b"OFF")
    # The FLASH button toggles the first LED, blue.
    topic = f"{mq.prefix}/blue/state"
    ha.publish(f"{mq.prefix}/blue/set", "OFF")
    ha.wait(lambda h: h.last.get(topic) == b"OFF", timeout=5)
    for want in (b"ON", b"OFF"):
        n = len(ha.seen)
        mq.set_pin(0, 0)
        time.sleep(0.3)
        mq.set_pin(0, 1)
        ha.wait(lambda h, want=want: h.last.get(topic) == want, timeout=5, what=f"blue {want!r} from the button")
        time.sleep(1.2)
        assert [p for t, p, _ in ha.seen[n:] if t == topic] == [want]


def test_home_assistant_restarting_gets_discovery_and_state_again(mq):
    ha = mq.ha
    n = len(ha.seen)
    ha.publish("homeassistant/status", "online")
    ha.wait(lambda h: {t for t, _, _ in h.seen[n:]} >= {
        f"homeassistant/light/{mq.id}/blue/config", f"homeassistant/light/{mq.id}/red/config",
        f"{mq.prefix}/status", f"{mq.prefix}/blue/state", f"{mq.prefix}/red/state"}, timeout=5,
        what="discovery and state again")


def test_junk_on_the_boards_topics_is_ignored_without_a_crash_or_a_heap_drop(mq):
    ha = mq.ha
    ha.publish(f"{mq.prefix}/blue/set", "OFF")
    mq.wait_state(lambda s: s["leds"]["blue"] is False, timeout=5)
    heap = [get(mq, "api/status")["heap_free"] for _ in range(3)][-1]
    boots = mq.state()["boots"]
    junk = [b"", b"on", b"1", b"{", b'{"state":', b'{"state": "ON", "state": "OFF"}', b"\xff\xfe\x00",
            b"ON" * 40, b"O" * 10240, json.dumps({"state": "ON", "pad": "x" * 10000}).encode()]
    for payload in junk:
        ha.publish(f"{mq.prefix}/blue/set", payload)
    for topic in (f"{mq.prefix}/nope/set", f"{mq.prefix}/blue", f"{mq.prefix}/blue/set/x", f"{mq.prefix}//set",
                  "homeassistant/status", f"{mq.prefix}/status/x"):
        ha.publish(topic, "ON")
    ha.publish("homeassistant/status", "x" * 10240)
    time.sleep(1.5)
    s = mq.state()
    assert s["leds"]["blue"] is False and s["boots"] == boots
    after = [get(mq, "api/status")["heap_free"] for _ in range(3)][-1]
    assert after >= heap - 64, (heap, after)
    ha.publish(f"{mq.prefix}/blue/set", "ON")  # and the next good command still works
    mq.wait_state(lambda s: s["leds"]["blue"] is True, timeout=5)
    ha.publish(f"{mq.prefix}/blue/set", "OFF")
    mq.wait_state(lambda s: s["leds"]["blue"] is False, timeout=5)
    assert get(mq, "api/status")["mqtt"]["state"] == "connected"


def test_a_thousand_mixed_requests_with_mqtt_on(mq):
    ha = mq.ha
    paths = ["api/leds", "api/status", "leds", ""]
    heap = None
    for i in range(-100, 1000):  # the first hundred fill what the app makes once (128 B), then the count
        if i == 0:
            heap = get(mq, "api/status")["heap_free"]
        if i % 10 == 9:
            assert post(mq, "api/leds/red", {"toggle": True}) == 200
        else:
            with urllib.request.urlopen(mq.http + paths[i % 4], timeout=5) as r:
                assert r.status == 200
                r.read()
    st = get(mq, "api/status")
    assert st["mqtt"]["state"] == "connected"
    assert st["heap_free"] >= heap - 64, (heap, st["heap_free"])  # nothing kept per request or message
    # Home Assistant agrees with the board on the state the toggles left.
    ha.wait(lambda h: h.last.get(f"{mq.prefix}/red/state") == (b"ON" if mq.state()["leds"]["red"] else b"OFF"),
            timeout=5)


def test_broker_stopped_and_restarted_board_back_online_and_http_answered_throughout(mq):
    ha = mq.ha
    b = mq.broker
    ha.close()
    b.stop()
    slow = []

    def answered_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            get(mq, "api/leds", timeout=2)
            slow.append(time.monotonic() - t0)
            time.sleep(0.05)

    answered_for(6)
    st = get(mq, "api/status")["mqtt"]
    assert st["state"] in ("waiting", "connecting") and st["problem"]
    b.start()
    t0 = time.monotonic()
    mq.ha = ha = HomeAssistant(b, USER, PASSWORD)
    while not online(ha, mq.prefix):
        assert time.monotonic() - t0 < 70, "the board did not come back online within 70 s"
        answered_for(0.5)
    assert max(slow) < 0.1, sorted(slow)[-5:]
    assert get(mq, "api/status")["mqtt"]["state"] == "connected"


def test_a_broker_that_never_answers_holds_up_nothing(mq):
    # Slow or half-dead: it takes the connection and never answers the login. The board gives up after
    # its connect timeout and tries again later; its page and API answer within 100 ms all along.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    slow = mq.tmp / "slow.toml"
    shutil.copyfile(mq.settings_path, slow)
    write_settings(slow, mq.broker, mqtt_port=port)
    try:
        deploy(mq, slow)
        took = []
        end = time.monotonic() + 7  # past one connect timeout (5 s)
        while time.monotonic() < end:
            t0 = time.monotonic()
            st = get(mq, "api/status", timeout=2)
            took.append(time.monotonic() - t0)
            time.sleep(0.05)
        assert max(took) < 0.1, sorted(took)[-5:]
        assert st["mqtt"]["state"] != "connected" and "no answer" in (st["mqtt"]["problem"] or "")
    finally:
        silent.close()
        deploy(mq, mq.settings_path)
    mq.ha.wait(lambda h: online(h, mq.prefix), timeout=40, what="the board online again")


def test_a_renamed_led_has_its_old_config_cleared(mq):
    ha = mq.ha
    ha.wait(lambda h: set(h.configs(mq.id)) == {"blue", "red"}, what="both configs")
    boots = mq.state()["boots"]
    renamed = mq.tmp / "renamed.toml"
    shutil.copyfile(mq.settings_path, renamed)
    renamed.write_text(renamed.read_text().replace('name = "red"', 'name = "desk"'))
    try:
        deploy(mq, renamed)
        mq.wait_state(lambda s: s["boots"] > boots, timeout=30)
        ha.wait(lambda h: set(h.configs(mq.id)) == {"blue", "desk"}, timeout=30, what="red's config cleared")
        assert ha.last[f"homeassistant/light/{mq.id}/red/config"] == b""
    finally:
        deploy(mq, mq.settings_path)
    ha.wait(lambda h: set(h.configs(mq.id)) == {"blue", "red"}, timeout=30, what="red back")


def test_a_wrong_password_is_named_on_the_repl_and_in_status_and_retried_with_backoff(mq):
    wrong = mq.tmp / "wrong.toml"
    shutil.copyfile(mq.settings_path, wrong)
    write_settings(wrong, mq.broker, mqtt_password="not the password")
    try:
        start = len(mq.broker.log_lines("New connection from"))
        out = mq.uart(40, action=lambda: deploy(mq, wrong), until=b"wrong mqtt_user or mqtt_password")
        assert b"wrong mqtt_user or mqtt_password" in out, out[-2000:]
        t0 = time.monotonic()
        st = get(mq, "api/status")["mqtt"]
        assert "wrong mqtt_user or mqtt_password" in st["problem"] and st["state"] != "connected"
        time.sleep(max(0.0, 8 - (time.monotonic() - t0)))
        tries = len(mq.broker.log_lines("New connection from")) - start
        assert 2 <= tries <= 5, f"{tries} logins in about 8 s"  # 1, 2, 4 s apart: no storm
    finally:
        deploy(mq, mq.settings_path)
    mq.ha.wait(lambda h: online(h, mq.prefix), timeout=40, what="the board online again")


@contextmanager
def more_boards(mq, macs: list[str]) -> Iterator[None]:  # noqa: ANN001
    """More boards on the same home Wi-Fi and broker: copies of mq's flash (its deploy, its settings), each
    powered on by the virtual board's launcher with a MAC of its own (the board id comes from it)."""
    procs, links = [], []
    try:
        for i, mac in enumerate(macs):
            folder = mq.tmp / f"board{i + 2}"
            folder.mkdir(exist_ok=True)
            flash = folder / "flash.bin"
            shutil.copyfile(mq.state_dir / "flash.bin", flash)
            link = runtime.HwLink(lambda msg: None)
            hw = {"mac": mac, "flash": str(flash), "flash_size": SIZE, "flash_user_start": NodeMCU.FLASH_USER_START,
                  "romfs": list(NodeMCU.ROMFS), "sta": {HOME: HOME_KEY}, "sta_delay_ms": 300}
            ports = {80: runtime.free_port(), 53: runtime.free_port(socket.SOCK_DGRAM)}
            procs.append(runtime.launch(folder, hw, link, ports, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            links.append(link)
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        for link in links:
            link.close()


def boards_cli(mq, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    b = mq.broker
    return subprocess.run([*ESPBLINK, "boards", "--mqtt", f"{b.host}:{b.port}", "--user", USER, "--password",
                           PASSWORD, *args], capture_output=True, text=True, timeout=30)


def test_five_boards_are_five_devices_and_espblink_boards_lists_them(mq):
    ha = mq.ha
    macs = [f"5c:cf:7f:00:00:{i:02x}" for i in range(1, 5)]
    ids = {mq.id} | {m.replace(":", "") for m in macs}
    with more_boards(mq, macs):
        ha.wait(lambda h: all(online(h, f"espblink/{i}") for i in ids), timeout=60, what="five boards online")
        ha.wait(lambda h: all(len(h.configs(i)) == 2 for i in ids), timeout=10, what="two lights per board")
        devices = {c["dev"]["ids"][0] for i in ids for c in ha.configs(i).values()}
        assert devices == {f"espblink_{i}" for i in ids}
        ha.wait(lambda h: all(f"espblink/{i}/info" in h.retained for i in ids), timeout=10, what="five infos")
        r = boards_cli(mq, "--json")
        assert r.returncode == 0, r.stderr
        found = json.loads(r.stdout)
        assert {x["id"] for x in found} == ids and all(x["online"] for x in found)
        for x in found:
            assert x["leds"] == {"blue": "OFF", "red": "OFF"} or set(x["leds"]) == {"blue", "red"}
            assert x["address"] == BOARD_IP and x["heap_free"] > 0 and x["uptime_s"] >= 0
            assert x["firmware"] == "1.27.0" and x["version"] and x["name"].startswith("espblink-")
        r = boards_cli(mq)
        lines = r.stdout.strip().splitlines()
        assert r.returncode == 0 and len(lines) == 6 and lines[0].split()[:3] == ["ID", "NAME", "STATE"], r.stdout
        assert all(i in r.stdout for i in ids) and r.stdout.count(" online ") == 5
    # Four switched off: their wills say offline, and so does `espblink boards`.
    ha.wait(lambda h: sum(not online(h, f"espblink/{i}") for i in ids) == 4, timeout=10, what="four wills")
    found = {x["id"]: x["online"] for x in json.loads(boards_cli(mq, "--json").stdout)}
    assert found == {i: i == mq.id for i in ids}


def test_espblink_boards_says_what_is_wrong(tmp_path):
    missing = tmp_path / "none.toml"
    r = subprocess.run([*ESPBLINK, "boards", "--settings", str(missing)], capture_output=True, text=True)
    assert r.returncode == 2 and "--mqtt HOST[:PORT]" in r.stderr
    r = subprocess.run([*ESPBLINK, "boards", "--mqtt", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot reach the MQTT broker at 127.0.0.1:1" in r.stderr
    r = subprocess.run([*ESPBLINK, "boards", "--mqtt", "host:port"], capture_output=True, text=True)
    assert r.returncode == 2 and "expected HOST or HOST:PORT" in r.stderr
    with broker(tmp_path / "b", users={USER: PASSWORD}) as b:
        r = subprocess.run([*ESPBLINK, "boards", "--mqtt", f"{b.host}:{b.port}", "--user", USER, "--password", "no"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "refused the login" in r.stderr and "--password" in r.stderr
        r = subprocess.run([*ESPBLINK, "boards", "--mqtt", f"{b.host}:{b.port}", "--user", USER, "--password",
                            PASSWORD], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "no espblink board" in r.stdout


def test_a_board_without_the_heap_for_mqtt_says_so_and_goes_on_serving(tmp_path):
    # The code as .mpy files (a 1 MB board): MQTT's code does not fit next to the app's at 38,912 B.
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "config.json").write_text(json.dumps({**VALID, "mqtt_host": "127.0.0.1", "mqtt_port": 1}))
    port = runtime.free_port()
    proc = subprocess.Popen([*ESPBLINK, "run", "--files", "--http-port", str(port), "--dir", str(fs)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    app = App(proc, port, fs)
    try:
        app.wait_for(app.url, timeout=30)
        app.wait_for("MQTT off: not enough free heap (it needs the code in ROMFS: 2 MB flash and up)")
        for _ in range(20):
            assert app.get_json("/api/status")["mqtt"] == {"state": "off", "problem": "not enough free heap"}
        assert app.post_json("/api/leds/blue", {"on": True})[0] == 200
        assert "crashed" not in app.output()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_without_home_wifi_the_board_does_not_try_the_broker(tmp_path):
    # On its own access point only, the broker (on the home network) is out of reach: no try, and
    # /api/status says what MQTT waits for.
    with broker(tmp_path / "b") as b:
        fs = tmp_path / "fs"
        fs.mkdir()
        (fs / "config.json").write_text(json.dumps({**VALID, "mqtt_host": b.host, "mqtt_port": b.port}))
        port = runtime.free_port()
        proc = subprocess.Popen([*ESPBLINK, "run", "--http-port", str(port), "--dir", str(fs)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        app = App(proc, port, fs)
        try:
            app.wait_for(app.url, timeout=30)
            time.sleep(3)
            st = app.get_json("/api/status")
            assert st["wifi"]["mode"] == "ap"
            assert st["mqtt"]["state"] == "no home Wi-Fi" and st["mqtt"]["problem"] is None
            assert not b.log_lines("New client connected")  # (a TCP probe of the test's own shows otherwise)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
