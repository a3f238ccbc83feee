# Scripts to rule them all: the same entry points locally and in CI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint format clean

install: $(STAMP)

# The modules compiled with mypyc (src/gatehouse/compiled.py): editing one builds them again.
COMPILED := $(addprefix src/,$(addsuffix .py,$(subst .,/,$(shell sed -n 's/^    "\(gatehouse\..*\)",$$/\1/p' src/gatehouse/compiled.py))))

# First the package and its dependencies as plain Python, then the same package again without
# build isolation: mypyc (from the test extra) compiles the request path against the installed
# libraries (setup.py). Modules built before are deleted first, so none is left to run older
# code. Without a C compiler and Python's headers the request path runs as plain Python (the
# same behaviour, slower; tests/test_compiled.py fails in CI then); GATEHOUSE_PURE_PYTHON=1
# make install leaves it plain Python on purpose.
$(STAMP): pyproject.toml setup.py src/gatehouse/compiled.py $(COMPILED)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	GATEHOUSE_PURE_PYTHON=1 $(BIN)/python -m pip install --quiet -e '.[test]'
	find src -name '*.so' -delete
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e . \
		|| echo "make: could not compile the request path (a C compiler and Python's" \
			"headers are needed); it runs as plain Python" >&2
	touch $(STAMP)

run: install
	$(BIN)/gatehouse up

# Three workers, each taking whole files (module fixtures such as a cluster are made once):
# most of the suite waits on the processes it starts (two workers kept two cores about half
# busy: 21.5 min; three: 17 min on the same two cores).
TEST_WORKERS ?= 3

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check setup.py src tests bench
	$(BIN)/ruff format --check setup.py src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
