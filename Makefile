# The two commands a new machine needs: `make run` and `make test`.
# Both create .venv and install whatever is missing first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TALLY  := $(VENV)/bin/tally
STAMP  := $(VENV)/.installed
GEN    := gen/.stamp
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
# Test processes, each with its own embedded PostgreSQL and NATS; a module's
# tests stay together on one worker. 1 runs them all in this process.
TEST_WORKERS ?= 2

.PHONY: install run test unit lint protos protos-check bench soak clean chromium screenshots

install: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,loadtest]'
	@touch $@

# Generated stubs live in gen/ (ignored); a .pth puts it on the venv's path.
$(GEN): $(STAMP) $(PROTOS) protos/generate.py
	$(PY) protos/generate.py
	@$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'tally_gen.pth').write_text(str(pathlib.Path('gen').resolve()) + '\n')"
	@touch $@

run: install
	$(TALLY) dev up

test: install lint chromium
	$(PY) protos/generate.py lint
	$(PY) -m pytest $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The fault suite for longer: more rounds of kill -9, restarts and redelivery
# under the usage stream (make test runs one round).
soak: install
	TALLY_SOAK_ROUNDS=$${TALLY_SOAK_ROUNDS:-5} $(PY) -m pytest -m e2e tests/e2e/test_faults.py

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check services gateway devtools bench tests protos console
	$(VENV)/bin/ruff format --check services gateway devtools bench tests protos console
	$(VENV)/bin/mypy

# The browser tests (tests/browser) drive Debian's chromium: Playwright's own
# browser download cannot work offline. Installed once, as root, when missing.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else echo "make: /usr/bin/chromium is missing; run as root: apt-get update && apt-get install -y chromium" >&2; exit 1; fi; }

# PNGs of the console's main pages under docs/console/ (a suite started for it).
screenshots: install chromium
	$(PY) -m tests.browser.screenshots

protos: $(STAMP)
	$(PY) protos/generate.py --force

bench: install
	$(PY) -m devtools.bench

clean:
	rm -rf $(VENV) gen .tally .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
