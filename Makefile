# Two entry points on a fresh clone: `make repro` (the whole pipeline) and `make test` (every test,
# as CI runs it); `make test-fast` skips the tests marked slow, for the inner loop.
# Both create .venv and install the project on first use (torch comes from local wheels).
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: repro test test-fast lint

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

repro: $(STAMP)
	. $(VENV)/bin/activate && dvc repro

test: $(STAMP)
	. $(VENV)/bin/activate && python -m pytest -q

test-fast: $(STAMP)
	. $(VENV)/bin/activate && python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks
