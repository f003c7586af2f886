# Two entry points on a fresh clone: `make repro` (the whole pipeline) and `make test` (every test,
# as CI runs it); `make test-fast` skips the tests marked slow, for the inner loop.
# Both create .venv and install the project on first use (torch comes from local wheels).
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# dvc plots' page with the chart libraries inlined (plots.html_template in .dvc/config): offline charts.
# Committed, so a clone installed without make has it; written here only when missing (tests/test_plots.py
# fails when it differs from what tools/plots_template.py writes with the pinned vl-convert-python)
PLOTS_TEMPLATE := .dvc/offline_plots.html

.PHONY: repro test test-fast lint realdata

# constraints.txt: the exact tested versions (pyproject.toml has ranges, for installing elsewhere)
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(PLOTS_TEMPLATE): | $(STAMP)
	$(VENV)/bin/python tools/plots_template.py $@

repro: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && dvc repro

test: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && python -m pytest -q

test-fast: $(STAMP) $(PLOTS_TEMPLATE)
	. $(VENV)/bin/activate && python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks tools

# the real samples the tests need, from their public sources (or ../shared/realdata when complete) into
# data/realdata ($PNEUMO_REALDATA overrides); standard library only, so no venv is needed
realdata:
	$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3) tools/realdata.py
