# espblink: every target creates .venv on first use. PORT=, FIRMWARE= and SETTINGS= are optional.
VENV ?= .venv
PY := $(VENV)/bin/python
ESPBLINK := $(VENV)/bin/espblink
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PORT_ARG = $(if $(PORT),--port '$(PORT)')

.PHONY: all flash deploy build repl reset status erase sim test test-fast bench lint debs multilib runtime clean

all: build

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

flash: $(STAMP)
	$(ESPBLINK) flash $(PORT_ARG) $(if $(FIRMWARE),--firmware '$(FIRMWARE)')

# REPLACE_SETTINGS=1: overwrite settings changed on the board (its settings page) with settings.toml.
deploy: $(STAMP)
	$(ESPBLINK) deploy $(PORT_ARG) $(if $(SETTINGS),--settings '$(SETTINGS)') $(if $(filter 1 yes true,$(REPLACE_SETTINGS)),--replace-settings)

build: $(STAMP)
	$(ESPBLINK) build

repl: $(STAMP)
	$(ESPBLINK) repl $(PORT_ARG)

reset: $(STAMP)
	$(ESPBLINK) reset $(PORT_ARG)

status: $(STAMP)
	$(ESPBLINK) status $(PORT_ARG)

erase: $(STAMP)
	$(ESPBLINK) erase $(PORT_ARG)

sim: $(STAMP) runtime
	$(ESPBLINK) sim demo

# Debian packages, installed with apt (as root, else through sudo) where missing: gcc-multilib builds the
# board's MicroPython 32-bit as the ESP8266 is (without it, and off Debian, it is built 64-bit); the tests
# also need chromium (Playwright cannot download its own browser here) and mosquitto (a real MQTT broker).
APT = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
      else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; fi
HAS_M32 = echo 'int main(void){return 0;}' | cc -m32 -x c - -o /dev/null 2>/dev/null

multilib:
	@$(HAS_M32) || ! command -v apt-get >/dev/null || { $(call APT,gcc-multilib); }

debs: multilib
	@command -v chromium >/dev/null && [ -x /usr/sbin/mosquitto ] || { $(call APT,chromium mosquitto); }

# The board's MicroPython (v1.27.0 unix port, ESP8266 settings), built once into build/micropython/.
runtime: $(STAMP) multilib
	@$(PY) -m nodemcu.runtime >/dev/null

lint: $(STAMP)
	$(PY) -m ruff check host tests bench

# Four workers (the boards mostly wait on their serial links and sockets), one test file each; then the
# tests that hold a timing bound (100 ms), alone.
test: $(STAMP) debs lint runtime
	$(PY) -m pytest -n 4 --dist loadfile -m "not serial"
	$(PY) -m pytest -m serial

# The inner loop: host logic and device modules, no board, browser or broker (under a minute).
test-fast: $(STAMP) runtime
	$(PY) -m pytest -m fast

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf build .sim
