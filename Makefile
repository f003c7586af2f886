# Two entry points on a fresh clone: `make repro` (the whole pipeline) and `make test` (every test,
# as CI runs it); `make test-fast` skips the tests marked slow, for the inner loop.
# Every target creates .venv and installs the project on first use (torch comes from local wheels);
# `make install` does only that. The README lists the others (quick, results, dag, docs).
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# dvc plots' page with the chart libraries inlined (plots.html_template in .dvc/config): offline charts.
# Committed, so a clone installed without make has it; written here only when missing (tests/test_plots.py
# fails when it differs from what tools/plots_template.py writes with the pinned vl-convert-python)
PLOTS_TEMPLATE := .dvc/offline_plots.html

.PHONY: install repro quick results dag test test-fast lint docs docs-results realdata

# constraints.txt: the exact tested versions (pyproject.toml has ranges, for installing elsewhere)
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(PLOTS_TEMPLATE): | $(STAMP)
	$(VENV)/bin/python tools/plots_template.py $@

# everything `make repro` needs, without running anything
install: $(STAMP) $(PLOTS_TEMPLATE)

repro: install
	. $(VENV)/bin/activate && dvc repro

# the quick look: one run of every encoder chain and the U-Nets of the study's headline pair; one run
# calls no difference (docs/experiments.md)
QUICK := -S 'runs=[0]' -S 'train_unet.variants=[none,labels]' -S 'train_unet.shares=[100]'
quick: install
	. $(VENV)/bin/activate && dvc exp run -n quick-look $(QUICK)

# the headline columns of `dvc exp show` (metrics/headline.json), every experiment, within 100 columns
results: install
	. $(VENV)/bin/activate && python tools/exp_table.py

# the stage graph (foreach/matrix instances folded into their stage), one stage a line
dag: install
	. $(VENV)/bin/activate && python tools/docs_dag.py

test: install
	. $(VENV)/bin/activate && python -m pytest -q

test-fast: install
	. $(VENV)/bin/activate && python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks tools

# the README's headline table and docs/results.md, from metrics/ (rerun after a run that changes them)
docs-results: $(STAMP)
	$(VENV)/bin/python tools/docs_results.py

# every generated part of docs/ refreshed, then the site built into site/ (offline; `mkdocs serve` to browse)
docs: docs-results
	. $(VENV)/bin/activate && python tools/docs_dag.py --write && NO_MKDOCS_2_WARNING=1 mkdocs build --strict

# the real samples the tests need, from their public sources (or ../shared/realdata when complete) into
# data/realdata ($PNEUMO_REALDATA overrides); standard library only, so no venv is needed
realdata:
	$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3) tools/realdata.py
