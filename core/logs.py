"""Log set-up for long-running services: one JSON object per line, so a log shipper can index
fields (index, partition, offset, ...) passed with ``extra=``; text for a person at a terminal."""

from __future__ import annotations

import logging
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]


def configure(log_format: LogFormat, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Health probes and upstream calls log every request at INFO; that is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
