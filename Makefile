# The README's two commands: `make demo` and `make test`. Both work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test test-pythons bench lint typecheck clean servers

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first so nothing pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Then benchmarks/all_to_all.py's optional engines, DuckDB and Daft. Daft without its dependencies:
# it pins pyarrow<26 and pip would downgrade ours; it runs with pyarrow 26 (tqdm is its only other need).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/pip install -q duckdb tqdm
	$(BIN)/pip install -q --no-deps daft
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

# mypy over the whole package (streambatch/, operators/, executor/, connectors/) under its
# installed module names (.ci/typecheck; options in pyproject.toml [tool.mypy]).
# Extra mypy arguments: make typecheck MYPY_ARGS=...
MYPY_ARGS ?=
TYPECHECK = MYPY=$(BIN)/mypy PYTHON=$(BIN)/python .ci/typecheck $(MYPY_ARGS)

typecheck: $(STAMP)
	$(TYPECHECK)

# mypy first, then the tests: pytest runs even when mypy finds errors, and either failing fails.
test: $(STAMP) servers
	@status=0; \
	$(TYPECHECK) || { status=1; echo "make test: typecheck failed; running pytest anyway"; }; \
	$(BIN)/python -m pytest -q || status=1; \
	exit $$status

# The test suite on every python3.X found on PATH, each in its own venv under .venvs/py3.X
# (made when missing; the project and its dev extras reinstalled when pyproject.toml or setup.py
# changes).
# torch is pinned and installed first, as for .venv. Its CPU wheel lies on this machine's disk
# for 3.11 only: another version gets torch==2.13.0 from PyPI where it can reach it (the
# multi-GB CUDA build; TORCH_PIP_ARGS=--no-index tries the local disk only, or point it at a
# CPU-wheel index). Where torch, or a dev extra, does not install, it is skipped and named in the
# summary (a dev extra that needs torch pulls it in). A fork while threads run (3.12+'s DeprecationWarning
# "This process (pid=N) is multi-threaded, use of fork() ...") fails that interpreter's run:
# CPython discards this warning under an "error" filter, so it is recorded ("always") and
# looked for in pytest's warnings summary. CI runs `make test` only.
# Subset: make test-pythons PYTEST_ARGS=tests/cli
PYTHONS ?= python3.10 python3.11 python3.12 python3.13 python3.14
PYTEST_ARGS ?=
TORCH_PIP_ARGS ?=
test-pythons: servers
	@failed=0; tested=0; summary=""; \
	for py in $(PYTHONS); do \
	  if ! exe=$$(command -v $$py); then \
	    summary="$$summary$$py: not found, skipped\n"; continue; \
	  fi; \
	  if ! $$exe -c '' >/dev/null 2>&1; then \
	    summary="$$summary$$py: not found ($$exe does not run, e.g. a pyenv shim of a version not selected), skipped\n"; continue; \
	  fi; \
	  venv=.venvs/py$${py#python}; stamp=$$venv/.installed-dev; \
	  echo "== $$py ($$exe) -> $$venv"; \
	  if [ ! -x $$venv/bin/python ]; then \
	    $$exe -m venv $$venv && $$venv/bin/pip install -q --upgrade pip \
	      || { summary="$$summary$$py: FAILED: cannot create $$venv\n"; failed=1; continue; }; \
	  fi; \
	  if [ ! -f $$stamp ] || [ pyproject.toml -nt $$stamp ] || [ setup.py -nt $$stamp ]; then \
	    : > $$venv/.skipped; \
	    $$venv/bin/pip install -q $(TORCH_PIP_ARGS) torch==2.13.0 \
	      || { echo "$$py: torch==2.13.0 is not available: skipped"; echo torch==2.13.0 >> $$venv/.skipped; }; \
	    if ! $$venv/bin/pip install -q -e '.[dev]'; then \
	      echo "$$py: the dev extras do not install together: installing them one by one"; \
	      $$venv/bin/pip install -q -e . \
	        || { summary="$$summary$$py: FAILED: the project does not install\n"; failed=1; continue; }; \
	      $$venv/bin/python -c "import sys; t = __import__('tomllib' if sys.version_info >= (3, 11) else 'tomli'); \
	        print(*t.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev'], sep='\n')" \
	      | while IFS= read -r req; do \
	          $$venv/bin/pip install -q "$$req" \
	            || { echo "$$py: $$req does not install: skipped"; echo "$$req" >> $$venv/.skipped; }; \
	        done; \
	    fi; \
	    touch $$stamp; \
	  fi; \
	  version=$$($$venv/bin/python -c 'import platform; print(platform.python_version())'); \
	  { $$venv/bin/python -m pytest -q -W "always:This process (pid=:DeprecationWarning" $(PYTEST_ARGS); \
	    echo $$? > $$venv/pytest.rc; } 2>&1 | tee $$venv/pytest.log; \
	  rc=$$(cat $$venv/pytest.rc); tested=1; \
	  counts=$$(tail -n 1 $$venv/pytest.log | awk '{ for (i = 2; i <= NF; i++) { w = $$i; sub(/,$$/, "", w); n[w] = $$(i - 1) } } \
	    END { printf "%d passed, %d failed, %d skipped, %d errors", n["passed"], n["failed"], n["skipped"], n["errors"] + n["error"] }'); \
	  result=ok; \
	  if grep -q "is multi-threaded, use of fork" $$venv/pytest.log; then result="FAILED: fork with threads (DeprecationWarning)"; failed=1; \
	  elif [ "$$rc" != 0 ]; then result="FAILED: pytest exit $$rc"; failed=1; fi; \
	  skipped=$$(paste -sd ' ' $$venv/.skipped 2>/dev/null); \
	  summary="$$summary$$py ($$version): $$counts; $$result$${skipped:+ (not installed: $$skipped)}\n"; \
	done; \
	echo "== test-pythons summary"; printf "%b" "$$summary"; \
	[ $$tested = 1 ] || { echo "no python3.X interpreter found on PATH"; exit 1; }; \
	exit $$failed

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/w5_small_job.py
	$(BIN)/python benchmarks/parquet_memory.py
	$(BIN)/python benchmarks/parquet_pushdown.py
	$(BIN)/python benchmarks/lookup_cache.py

lint: $(STAMP)
	$(BIN)/ruff check streambatch operators executor connectors tests examples benchmarks setup.py

clean:
	rm -rf $(VENV) build *.egg-info
