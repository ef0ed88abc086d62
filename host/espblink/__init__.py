"""espblink: host tools for a Wi-Fi LED switch on a NodeMCU ESP8266 running MicroPython."""

from espblink.device import VERSION as __version__  # noqa: F401  (the app's: device/app.py)
