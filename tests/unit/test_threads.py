"""Every service process keeps numpy's BLAS to ``blas_threads`` (nrtrec/core/threads.py).

Run in a child interpreter: the limit lasts for the process, and this one runs other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHILD = """
import json, sys
from threadpoolctl import threadpool_info
import numpy  # the BLAS threadpoolctl can see
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
from nrtrec.cli.services import _start
from nrtrec.core.settings import Settings
_start(Settings(blas_threads=int(sys.argv[1]), log_format="text"))
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def _threads(limit: int) -> dict[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit)], env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_service_process_runs_blas_on_the_threads_it_is_given():
    threads = _threads(1)
    assert threads["before"], "numpy loaded no BLAS that threadpoolctl sees"
    if max(threads["before"]) < 2:
        pytest.skip("this machine's BLAS runs one thread anyway")
    assert threads["after"] == [1] * len(threads["before"]), threads
    assert _threads(2)["after"] == [2] * len(threads["before"])
