"""pandas 3 beside the pandas 2 the images ship: the tests of everything a team's
pandas code meets outside Spark and TensorFlow (publishing DataFrames and parquet, the
Python API, live inference's keyed reads and their index, object storage), run in a
virtualenv of their own with the newest pandas (requirements/tools/pandas3.txt)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PANDAS_3 = "3.1.1"  # requirements/tools/pandas3.txt pins it (requirements/compile.sh)

# A second environment, like the images: its own target (`make test-pandas3`, which
# .ci/run runs), one line of the summary in `make test`.
if os.environ.get("PRESCORE_PANDAS3_TEST") != "1":
    pytest.skip(
        "pandas 3 run not started here; `make test-pandas3` runs it (.ci/run does)",
        allow_module_level=True,
    )
MODULES = [
    "tests/test_publish.py",
    "tests/test_python_api.py",
    "tests/test_keyed_rows.py",
    "tests/test_key_index.py",
    "tests/test_object_store.py",
]


@pytest.mark.slow  # installs a virtualenv on first use, then runs a test session in it
@pytest.mark.timeout(1200)
def test_the_pandas_facing_tests_pass_under_pandas_3() -> None:
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    installed = subprocess.run(
        [str(ROOT / "requirements" / "tools" / "install.sh"), "pandas3", f"pandas=={PANDAS_3}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    python = installed.stdout.strip().splitlines()[-1] + "/python"
    version = subprocess.run(
        [python, "-c", "import pandas; print(pandas.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert version.stdout.strip() == PANDAS_3
    # the tests that need Spark or TensorFlow (marked slow) are not installed there
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *MODULES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1100,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0 and " passed" in summary, run.stdout[-5000:] + run.stderr[-2000:]
    assert "failed" not in summary and "error" not in summary, summary
