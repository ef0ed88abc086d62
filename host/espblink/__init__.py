"""espblink: host tools for a Wi-Fi LED switch on a NodeMCU ESP8266 running MicroPython."""

__version__ = "0.1.0"
