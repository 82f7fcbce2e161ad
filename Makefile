# `make test` is the one command that runs the suite on a fresh machine: it creates .venv,
# installs ttbridge with its test and bench extras (the chart test needs matplotlib), fetches
# Kafka's jars (cached in ~/.cache/ttbridge) and runs pytest against a real broker it starts
# and stops itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test install kafka-jars demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

kafka-jars: install
	$(PY) -c "from app.devtools.kafka_local import fetch_jars; print(fetch_jars())"

test: install kafka-jars
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/ttbridge demo

bench: install
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ttbridge
