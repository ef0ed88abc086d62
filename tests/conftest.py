"""Shared test setup. Browser tests use Debian's chromium through Playwright (no browser download here).

Tiers, as markers: `fast` (host logic and device modules on the board's MicroPython, no board, browser or
broker: `make test-fast`, under a minute), `board` (a running app or virtual board), `browser` (Chromium).
A module is fast when it is listed in FAST; a test that uses the browser is `browser`; the rest `board`."""

from __future__ import annotations

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 3,
         "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/150.0 Mobile Safari/537.36"}


FAST = {"test_host", "test_device_api", "test_dns", "test_device_units", "test_docs", "test_runtime"}


def pytest_configure(config):
    for name, what in (("fast", "no board, browser or broker"), ("board", "runs the app or a virtual board"),
                       ("browser", "drives Chromium")):
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items):
    for item in items:
        if {"browser", "phone_page"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("browser")
        elif item.module.__name__ in FAST:
            item.add_marker("fast")
        else:
            item.add_marker("board")


@pytest.fixture(scope="session", autouse=True)
def board_micropython():
    """The board's MicroPython, built once before any test starts a board (about 30 s the first time)."""
    from nodemcu import runtime

    return runtime.build()


@pytest.fixture
def deployed_board(tmp_path, tmp_path_factory):
    """A virtual board as `make flash deploy` leaves it, its settings file beside it, its app serving."""
    from sim_support import deployed, running_sim

    state, settings = deployed(tmp_path / "deployed", tmp_path_factory)
    with running_sim(state) as sim:
        sim.settings = settings
        sim.serving()
        yield sim


@pytest.fixture(scope="session")
def pw():
    """Playwright, started once: its sync API cannot run twice at a time."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(pw):
    """Headless Debian chromium; a phone context comes from phone_page."""
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


@pytest.fixture
def phone_page(browser):
    ctx = browser.new_context(**PHONE)
    page = ctx.new_page()
    yield page
    ctx.close()
