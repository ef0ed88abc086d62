# Frozen as in ESP8266_GENERIC's manifest_2MiB.py, where it runs on a host: the port's start-up code as it
# is, asyncio, umqtt, requests and ntptime; then the board's C modules as Python shims.
module("_boot.py", base_path="$(PORT_DIR)/../esp8266/modules", opt=3)
module("flashbdev.py", base_path="$(PORT_DIR)/../esp8266/modules", opt=3)
module("inisetup.py", base_path="$(PORT_DIR)/../esp8266/modules", opt=3)
include("$(MPY_DIR)/extmod/asyncio")
require("umqtt.simple")
require("umqtt.robust")
require("requests")
require("ntptime")
freeze("modules", opt=3)
