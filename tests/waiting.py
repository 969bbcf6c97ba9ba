"""The one way tests wait: a bounded poll of a condition that fails with a clear message.

No test sleeps a fixed time or asserts how long something took; each waits for what it needs
(a server healthy, a record applied) for at most a generous bound, and says what it waited
for, and what it saw, when the bound passes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Message


def poll(
    predicate: Callable[[], object],
    timeout_s: float,
    *,
    interval_s: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> BaseException | None:
    """Call ``predicate`` until it is true or ``timeout_s`` passed: the bounded poll under every
    wait here. Returns None once it held, else the last exception ``ignoring`` let through (or
    ``TimeoutError``)."""
    start = time.monotonic()
    last: BaseException = TimeoutError()
    while True:
        try:
            if predicate():
                return None
        except ignoring as e:
            last = e
        if time.monotonic() - start >= timeout_s:
            return last
        time.sleep(interval_s)


def wait_until(
    what: str,
    predicate: Callable[[], object],
    timeout_s: float = 30.0,
    *,
    interval_s: float = 0.05,
    diagnose: Callable[[], str] = lambda: "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> float:
    """Seconds until ``predicate()`` was true; fails the test after ``timeout_s`` naming
    ``what`` and ``diagnose()``. Exceptions in ``ignoring`` count as "not yet" (a server that
    is still starting)."""
    start = time.monotonic()
    failed = poll(predicate, timeout_s, interval_s=interval_s, ignoring=ignoring)
    if failed is None:
        return time.monotonic() - start
    seen = "" if isinstance(failed, TimeoutError) else f" (last: {type(failed).__name__}: {failed})"
    pytest.fail(f"{what}: not within {timeout_s:.0f} s{seen}\n{diagnose()}")


def wait_healthy(
    url: str,
    process: subprocess.Popen | None = None,
    *,
    log: Path | None = None,
    timeout_s: float = 90.0,
) -> httpx.Response:
    """The first 2xx answer of ``url`` (a ``/healthz``); fails at once, with the end of ``log``,
    when ``process`` exits first."""
    answer: list[httpx.Response] = []

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log and log.exists() else ""

    def healthy() -> bool:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{url}: the process exited with {process.returncode}\n{tail()}")
        response = httpx.get(url, timeout=2.0, trust_env=False)
        if response.is_success:
            answer.append(response)
        return bool(answer)

    wait_until(
        f"{url} healthy",
        healthy,
        timeout_s,
        interval_s=0.2,
        diagnose=tail,
        ignoring=(httpx.TransportError,),
    )
    return answer[0]


def collect(
    consumer: Consumer,
    enough: Callable[[list[Message]], bool],
    timeout_s: float = 30.0,
) -> list[Message]:
    """Records ``consumer`` polls until ``enough(records)`` or ``timeout_s`` passed, whichever
    comes first; the caller asserts on what came (a short list shows what is missing)."""
    got: list[Message] = []

    def more() -> bool:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
        return enough(got)

    poll(more, timeout_s, interval_s=0)
    return got
