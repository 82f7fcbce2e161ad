# `make test` is the one command that runs the suite on a fresh machine: it creates .venv,
# installs ttbridge with its test and bench extras (the chart test needs matplotlib), fetches
# Kafka's jars (cached in ~/.cache/ttbridge) and runs pytest against a real broker it starts
# and stops itself. The manifests are checked with kube-score and kustomize, built with Go from
# the module proxy into .venv/bin (cached there).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test install kafka-jars deploy-tools demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

kafka-jars: install
	$(PY) -c "from app.devtools.kafka_local import fetch_jars; print(fetch_jars())"

GO_INSTALL = command -v go >/dev/null || { echo "go not found: the kube-score/kustomize checks will be skipped"; exit 0; }; \
	GOBIN=$(abspath $(VENV))/bin go install

$(VENV)/bin/kube-score: | install
	$(GO_INSTALL) github.com/zegl/kube-score/cmd/kube-score@v1.20.0

$(VENV)/bin/kustomize: | install
	$(GO_INSTALL) sigs.k8s.io/kustomize/kustomize/v5@v5.8.0

deploy-tools: $(VENV)/bin/kube-score $(VENV)/bin/kustomize

test: install kafka-jars deploy-tools
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q

demo: install
	$(VENV)/bin/ttbridge demo

bench: install
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ttbridge
