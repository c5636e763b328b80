# The README's two commands: `make demo` and `make test`. Both work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test bench lint clean servers

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first so nothing pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

# Redis and PostgreSQL servers for the lookup tests (Debian packages; installed only when missing).
servers:
	@command -v redis-server >/dev/null && { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql; }

# The demo needs only torch and Pillow, so a fresh clone runs it without the test extras.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[images]'
	touch $(DEMO_STAMP)

# The image-classification example run through the CLI: 3,000 generated JPEGs -> CNN -> parquet.
DEMO_DIR ?= /tmp/streambatch-demo
demo: $(DEMO_STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/python examples/image_classification.py generate --images 3000 --output $(DEMO_DIR)/images
	PYTHONPATH=examples $(BIN)/python -m streambatch infer --input $(DEMO_DIR)/images \
	  --columns id,image --preprocess image_classification:preprocess \
	  --model image_classification:Classifier --batch-size 256 --concurrency 1,2 \
	  --output $(DEMO_DIR)/predictions
	$(BIN)/python examples/image_classification.py accuracy --output $(DEMO_DIR)

test: $(STAMP) servers
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/w5_small_job.py
	$(BIN)/python benchmarks/parquet_memory.py
	$(BIN)/python benchmarks/parquet_pushdown.py
	$(BIN)/python benchmarks/lookup_cache.py

lint: $(STAMP)
	$(BIN)/ruff check streambatch operators executor connectors tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
