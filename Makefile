# Two entry points on a fresh clone: `make repro` (the whole pipeline) and `make test` (every test,
# as CI runs it); `make test-fast` skips the tests marked slow, for the inner loop.
# Both create .venv and install the project on first use (torch comes from local wheels).
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# dvc plots' page with the chart library inlined (plots.html_template in .dvc/config): offline charts
PLOTS_TEMPLATE := .dvc/plots/offline.html

.PHONY: repro test test-fast lint

# constraints.txt: the exact tested versions (pyproject.toml has ranges, for installing elsewhere)
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(PLOTS_TEMPLATE): tools/plots_template.py
	python3 tools/plots_template.py $@

repro: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && dvc repro

test: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && python -m pytest -q

test-fast: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks tools
