"""Native thread pools of a service process: numpy's BLAS keeps to ``Settings.blas_threads``.

A service answers many small requests at once, and each does a small matrix product or two (the
app scores its popular and fresh pools, a query node answers a tight filter exactly). OpenBLAS
splits even a 400-by-64 product over every core, and its workers then spin, waiting for the next
one: measured on this project's 2-core machine, 1.2 ms of CPU per such product and a 1 ms pause,
against 0.05 ms on one thread, paid by every other process on the box. A server's cores belong to
its concurrent requests (and its neighbours), not to splitting one small product.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def limit_blas_threads(threads: int) -> None:
    """From now on, at most ``threads`` BLAS threads in this process (numpy's OpenBLAS, or
    whichever BLAS it loaded)."""
    import numpy  # noqa: F401  (threadpoolctl limits the libraries already loaded)

    # Called as a function (not a context manager): the limit stays for the process's life.
    threadpool_limits(limits=threads, user_api="blas")
