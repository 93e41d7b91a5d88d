# septlab: `make demo` answers the design question, `make test` runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/septlab compare --scenario seed --variants rcu-free,tdx-free,tdx-alloc-hook --dpamt both

test: $(STAMP)
	$(BIN)/ruff check septlab tests bench
	$(BIN)/python -m pytest

bench: $(STAMP)  # 1 and 4 GiB, ~2 min; bench/boot_teardown.py alone runs 1-64 GiB (~35 min)
	$(BIN)/python bench/boot_teardown.py --sizes 1GiB,4GiB

clean:
	rm -rf $(VENV) septlab-traces .pytest_cache build *.egg-info
