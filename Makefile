# The two set-up commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= data/homeserver.yaml
SERVER_NAME ?= localhost

.PHONY: run test install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.py
	$(PY) -m pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python setup.py
	$(PY) -m pip install --quiet -e '.[postgres,test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Install, generate a config and signing key under ./data if there is none, and serve on 127.0.0.1:8008.
run: install
	@test -f $(CONFIG) || $(PY) -m homeserver --generate-config --server-name $(SERVER_NAME) \
		--config-path $(CONFIG) --data-dir data
	$(PY) -m homeserver -c $(CONFIG)

# Install with the test extras and run the whole suite. PostgreSQL runs too when
# HOMESERVER_TEST_POSTGRES_URL is set (.ci/run sets it); otherwise those tests skip, saying why.
test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
