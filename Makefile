# The two commands a new machine needs: `make run` and `make test`.
# Both create .venv and install whatever is missing first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TALLY  := $(VENV)/bin/tally
STAMP  := $(VENV)/.installed
GEN    := gen/.stamp
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)

.PHONY: install run test unit lint protos protos-check bench clean

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

test: install lint
	$(PY) protos/generate.py lint
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check services gateway devtools bench tests protos
	$(VENV)/bin/ruff format --check services gateway devtools bench tests protos
	$(VENV)/bin/mypy

protos: $(STAMP)
	$(PY) protos/generate.py --force

bench: install
	@echo "make bench: the load-test harness and benchmarks arrive with the performance issue (9/9); nothing to measure yet."

clean:
	rm -rf $(VENV) gen .tally .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
