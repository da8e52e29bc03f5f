# Tongban: `make demo` runs the local four-tier federation; `make test` runs the test suite.
# Both do all set-up first (Debian packages, Python venv, npm packages) and say what they do.

SHELL := bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
# This machine's pip configuration names local wheel folders that may not exist; keep the output readable.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
VENV := .venv
PY := $(VENV)/bin/python
STAMP_VENV := $(VENV)/.installed
STAMP_NPM := deploy/docstore/node_modules/.installed
PYTEST_ARGS ?=

.PHONY: setup system venv npm demo test lint bench bench-scale-quick bench-scale clean messages

setup: system venv npm

system:
	@bash deploy/setup-system.sh

venv: $(STAMP_VENV)
$(STAMP_VENV): pyproject.toml
	@echo "[setup] creating Python venv in $(VENV) and installing Tongban (a few minutes on first run) …"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "[setup] error: Python 3.11 is required (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip 2>&1 | { $(QUIET_PIP); }
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | { $(QUIET_PIP); }
	@# face_recognition's own metadata would make pip compile dlib; dlib-bin provides it prebuilt.
	@$(PY) -m pip install -q --no-deps 'face_recognition==1.3.0' 2>&1 | { $(QUIET_PIP); }
	@$(VENV)/bin/pybabel -q compile -d node/translations
	@touch $@
	@echo "[setup] Python packages installed"

# UI text: re-extract the messages of the web pages and merge them into the zh_CN and en catalogues
# (then translate the new entries of node/translations/en/LC_MESSAGES/messages.po). The .mo files are
# compiled here and, when missing or older than their .po, by the app at start.
MESSAGES := node/translations
messages: venv
	@$(VENV)/bin/pybabel extract -F babel.cfg -k lazy_gettext -k lazy_pgettext:1c,2 --add-location=file \
		--sort-output --project=Tongban --version=0.1.0 --copyright-holder=Tongban -o $(MESSAGES)/messages.pot .
	@$(VENV)/bin/pybabel update -i $(MESSAGES)/messages.pot -d $(MESSAGES) --no-wrap --ignore-obsolete
	@$(VENV)/bin/pybabel compile -d $(MESSAGES) --statistics

npm: $(STAMP_NPM)
$(STAMP_NPM): deploy/docstore/package-lock.json
	@echo "[setup] installing pouchdb-server 4.2.0 from the lock file (npm ci, about 2 minutes on first run) …"
	@cd deploy/docstore && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
	@echo "[setup] pouchdb-server installed"

demo: setup
	@echo "[demo] starting the local federation (Ctrl-C stops every process) …"
	@$(VENV)/bin/tongban federation up

test: setup
	@bash deploy/setup-system.sh chromium
	@bash deploy/run-tests.sh $(PYTEST_ARGS)

lint: venv
	@$(VENV)/bin/ruff check .

bench: setup
	@bash deploy/setup-system.sh wrk
	@$(PY) bench/bench_acceptance.py
	@$(PY) bench/bench_replication.py
	@$(PY) bench/bench_federation.py
	@$(PY) bench/bench_ops.py

# City scale (issue 18): a year of cases at the city node and a slow village link (needs root for tc/netns).
# Each bench ends with one JSON line {"bench", "figures", "goals_met"}; the full forms append it to docs/benchmarks.md.
bench-scale-quick: setup
	@$(PY) bench/bench_city_year.py --quick
	@$(PY) bench/bench_slow_link.py --quick

bench-scale: setup
	@$(PY) bench/bench_city_year.py --cases 100000 --record
	@$(PY) bench/bench_slow_link.py --cases 1000 --record

clean:
	rm -rf var test-artifacts .pytest_cache
