# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-clock lint format bench bench-summary install install-dev chromium nginx faketime migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --noinput -v 0

# On the embedded default (no DATABASE_URL) the demo sign-in provider is on unless turned off.
DEMO_PROVIDER = $(if $(DATABASE_URL),false,true)
run: migrate
	GATEWAY_AUTH__DEMO_PROVIDER=$${GATEWAY_AUTH__DEMO_PROVIDER:-$(DEMO_PROVIDER)} \
	  $(BIN)/python manage.py serve

# Debian's chromium for the browser tests; installed when missing (needs root, as in CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
	  { echo "error: chromium is required for the browser tests (apt-get install chromium)"; exit 1; }; }

# Debian's nginx for the deployment tests (tests/deploy: a TLS-terminating proxy in front of
# gunicorn, run by the tests themselves under a temp dir); installed when missing, like chromium.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  echo "installing Debian's nginx for the deployment tests"; \
	  apt-get install -y -q nginx >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null; } || \
	  { echo "error: nginx is required for the deployment tests (apt-get install nginx)"; exit 1; }; }

# Debian's faketime for the clock guard (test-clock); installed when missing, like chromium.
faketime:
	@command -v faketime >/dev/null 2>&1 || { \
	  echo "installing Debian's faketime for the clock guard"; \
	  apt-get install -y -q faketime >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q faketime >/dev/null; } || \
	  { echo "error: faketime is required for the clock guard (apt-get install faketime)"; exit 1; }; }

# Claude Code (pinned, from npm) for the tests that drive the gateway with the real client.
CLAUDE_CODE := var/claude-code/node_modules/.bin/claude
$(CLAUDE_CODE):
	@command -v npm >/dev/null 2>&1 || { echo "error: npm is required for the Claude Code tests"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix var/claude-code @anthropic-ai/claude-code@2.1.332

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev chromium nginx faketime $(CLAUDE_CODE) lint
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-clock

# The date-bomb guard: the time-bound suites again, three years from now, on the embedded
# default. faketime moves the clock of pytest and of every server it starts (time-machine moves
# only the pytest process), so a test or a store that mixes a fixed date with the wall clock
# fails here today rather than on some day next year.
CLOCK_GUARD_TESTS ?= tests/caps tests/usage tests/accounts tests/costs
test-clock: install-dev faketime
	env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL \
	  faketime -f +1100d $(BIN)/pytest -p no:cacheprovider $(CLOCK_GUARD_TESTS)

# The gateway against a direct call to the emulator (issue #17): ~10 min, BENCH_QUICK=1 ~2.5 min;
# JSON in var/bench/ (also BENCH_JSON), compared with the previous run's.
bench: install-dev
	$(BIN)/python -m bench

# The admin summary over 5M records (issue #15): loads once into its own PostgreSQL database.
bench-summary: install-dev
	$(BIN)/python -m bench.admin_summary

clean:
	rm -rf var/test.sqlite3* var/celery
