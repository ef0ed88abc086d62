# espblink: every target creates .venv on first use. PORT=, FIRMWARE= and SETTINGS= are optional.
VENV ?= .venv
PY := $(VENV)/bin/python
ESPBLINK := $(VENV)/bin/espblink
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PORT_ARG = $(if $(PORT),--port '$(PORT)')

.PHONY: all flash deploy build repl reset status erase sim test bench lint chromium clean

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

sim: $(STAMP)
	$(ESPBLINK) sim demo

# Browser tests need Debian's chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

lint: $(STAMP)
	$(PY) -m ruff check host tests bench

test: $(STAMP) chromium lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf build .sim
