# prescore: `make demo` runs the whole thing locally; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-images test-pandas3 test-spark-env lint docs bench clean

# Development and CI install the dev lock (every package pinned with its hashes, at the
# versions the images' locks pin), then the project itself without dependencies.
$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.hotels.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# docs/reference.md's settings tables, made again from the settings' declarations
# (prescore/env.py); tests/test_settings_docs.py fails when they fall behind.
docs: $(STAMP)
	$(PY) -m tests.settings_docs

# The suite runs in TEST_WORKERS processes side by side (pytest-xdist), a test file to a
# process: most tests wait on Spark, TensorFlow or a server, so two share two cores well.
TEST_WORKERS ?= 2

test: $(STAMP) lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The images built and run for real (tests/test_images.py): needs a Docker engine; .ci/run
# starts one. Progress lines on the terminal, each step's output in its log.
test-images: $(STAMP)
	PRESCORE_IMAGE_TEST=1 $(PY) -m pytest -q -s tests/test_images.py

# The pandas-facing tests again under pandas 3, in a virtualenv of their own
# (tests/test_pandas3.py, requirements/tools/pandas3.txt); .ci/run runs it.
test-pandas3: $(STAMP)
	PRESCORE_PANDAS3_TEST=1 $(PY) -m pytest -q tests/test_pandas3.py

# The job on a standalone cluster whose executors run the Python environment shipped to
# them by --archives (tests/python_env.py packs this one with venv-pack, TensorFlow and
# all, which is why it is a run of its own); .ci/run runs it.
test-spark-env: $(STAMP)
	PRESCORE_SPARK_ENV_TEST=1 $(PY) -m pytest -q tests/test_spark_standalone.py -k archives

# Day to day: what needs no Spark, no TensorFlow training, no cluster and no tool install.
test-fast: $(STAMP) lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.bench_scoring
	$(PY) -m bench.bench_tagging
	$(PY) -m bench.bench_tagging --size 1024x768 --count 400 --before 8dcc8e0
	$(PY) -m bench.bench_reading
	$(PY) -m bench.bench_overlap --size 1024x768
	$(PY) -m bench.bench_lookup
	$(PY) -m bench.bench_publish
	$(PY) -m bench.bench_fallback
	$(PY) -m bench.bench_int8
	$(PY) -m bench.bench_misses
	$(PY) -m bench.bench_gates
	$(PY) -m bench.bench_cluster

clean:
	rm -rf var spark-warehouse
