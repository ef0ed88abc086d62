"""The page in a phone browser (Debian chromium, Playwright, phone profile) against the app on MicroPython."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_support import VALID, run_app

SHOTS = Path(__file__).parent.parent / "build" / "screenshots"


@pytest.fixture
def app(tmp_path):
    """The app of this test's own, its LEDs all off."""
    board = tmp_path / "board"
    board.mkdir()
    with run_app(board, VALID) as a:
        yield a
        # A phone browser's way of loading (parallel and speculative connections) never hits a handler error
        # such as a MemoryError on the board's 38,912 B heap.
        assert "handler error" not in a.output(), a.output()


def test_tapping_each_switch_lights_its_led(app, phone_page, tmp_path):
    requests = []
    phone_page.on("request", lambda r: requests.append(r.url))
    phone_page.goto(app.url)
    switches = phone_page.locator("button[role=switch]")
    switches.first.wait_for()
    assert switches.count() == 3
    assert requests[0] == app.url and all(u.startswith(app.url) for u in requests)
    for name, line in (("blue", "GPIO2 low: blue LED on"), ("red", "GPIO16 low: red LED on"),
                       ("ext", "GPIO5 high: ext LED on")):
        sw = phone_page.locator(f"#led-{name} button[role=switch]")
        assert sw.get_attribute("aria-pressed") == "false"
        n = len(app.lines)
        sw.tap()
        phone_page.wait_for_function(
            f"document.querySelector('#led-{name} button[role=switch]').getAttribute('aria-pressed')=='true'")
        app.wait_line(line, n)
    SHOTS.mkdir(parents=True, exist_ok=True)
    box = switches.first.bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44  # a thumb-sized target on a 390 px screen
    phone_page.screenshot(path=str(SHOTS / "phone-light.png"))
    background = "getComputedStyle(document.body).backgroundColor"
    light = phone_page.evaluate(background)
    phone_page.emulate_media(color_scheme="dark")
    assert phone_page.evaluate(background) != light
    phone_page.screenshot(path=str(SHOTS / "phone-dark.png"))


def test_two_phones_stay_in_sync(app, browser):
    from conftest import PHONE

    a = browser.new_context(**PHONE).new_page()
    b = browser.new_context(**PHONE).new_page()
    a.goto(app.url)
    b.goto(app.url)
    a.locator("#led-red button[role=switch]").wait_for()
    b.locator("#led-red button[role=switch]").wait_for()
    before = b.locator("#led-red button[role=switch]").get_attribute("aria-pressed")
    a.locator("#led-red button[role=switch]").tap()
    want = "false" if before == "true" else "true"
    # The other phone refreshes every few seconds.
    b.wait_for_function(
        f"document.querySelector('#led-red button[role=switch]').getAttribute('aria-pressed')=='{want}'",
        timeout=8000)
    a.context.close()
    b.context.close()


def test_page_works_without_javascript(app, browser):
    from conftest import PHONE

    ctx = browser.new_context(**PHONE, java_script_enabled=False)
    page = ctx.new_page()
    page.goto(app.url)
    page.wait_for_url("**/leds")
    n = len(app.lines)
    label = page.locator("button", has_text="blue").inner_text()
    page.locator("button", has_text="blue").tap()
    page.wait_for_url("**/leds")
    app.wait_line("blue LED", n)
    assert page.locator("button", has_text="blue").inner_text() != label
    ctx.close()


def test_another_website_cannot_switch_a_led(app, browser, tmp_path):
    import http.server
    import threading

    (tmp_path / "evil.html").write_text(f"""<!doctype html><body>
<form id=f method=post action="{app.url}api/leds/blue"><input name=action value=toggle></form>
<script>
fetch("{app.url}api/leds/blue", {{method: "POST", mode: "no-cors", body: "action=toggle",
  headers: {{"Content-Type": "application/x-www-form-urlencoded"}}}}).finally(() => f.submit());
</script></body>""")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        before = app.get_json("/api/leds")["leds"][0]["on"]
        n = len(app.lines)
        ctx = browser.new_context()
        page = ctx.new_page()
        answers = []
        page.on("response", lambda r: answers.append((r.url, r.status)))
        page.goto(f"http://127.0.0.2:{httpd.server_address[1]}/evil.html")
        page.wait_for_url(f"{app.url}api/leds/blue", timeout=10000)
        assert (f"{app.url}api/leds/blue", 403) in answers
        ctx.close()
        assert app.get_json("/api/leds")["leds"][0]["on"] == before
        assert not [ln for ln in app.lines[n:] if ln.startswith("GPIO2")]
    finally:
        httpd.shutdown()


def test_phone_page_shows_a_settings_warning(phone_page, tmp_path):
    with run_app(tmp_path, '{"ap_key": "short"') as app:
        phone_page.goto(app.url)
        warn = phone_page.locator("#warn")
        warn.wait_for(state="visible", timeout=10000)
        assert "config.json is corrupt" in warn.inner_text() and "make deploy" in warn.inner_text()
        assert phone_page.locator("button[role=switch]").count() == 2  # the default LEDs still switch
        phone_page.screenshot(path=str(SHOTS / "phone-warning.png"))
