# The two commands of README.md: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# hnswlib builds from source for this machine's CPU (-march=native: its distance kernels use AVX2 or AVX-512 where
# the CPU has them; a batch of searches ~1.6x faster than the portable build, BENCHMARKS.md "Feed under load",
# sixteenth round). `make PORTABLE=1` builds a .venv for any x86-64 (one to copy to another machine).
ifeq ($(PORTABLE),1)
export HNSWLIB_NO_NATIVE := 1
endif

.PHONY: run test lint bench clean

run: $(VENV)/.installed
	$(BIN)/appliance serve

test: $(VENV)/.installed
	$(BIN)/ruff check appliance storage jobs web tests bench
	$(BIN)/lint-imports
	$(BIN)/pytest -q

# Every benchmark at its default size, figures into bench/results/ (see BENCHMARKS.md); not part of `make test`.
bench: $(VENV)/.installed
	for b in encoding import-products ann save compact ingest import feed serve memory impressions; do $(BIN)/appliance bench $$b || exit 1; done
	for d in demo movielens retail; do $(BIN)/appliance bench quality $$d && $(BIN)/appliance bench prior $$d || exit 1; done
	$(BIN)/appliance bench train --skip shop-1M:before

# torch first and alone: an unpinned resolution would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-cache-dir -c requirements.lock hnswlib  # never a wheel cached by the other kind of build
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV)
