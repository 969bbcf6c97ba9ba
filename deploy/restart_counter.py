"""supervisord's event listener that counts restarts: ``python -m nrtrec.deploy.restart_counter
<restarts.json>``.

supervisord sends it a ``PROCESS_STATE_EXITED`` event when a program exits on its own (a stop
on request ends in STOPPED instead) and ``PROCESS_STATE_BACKOFF`` when a start failed; each is
followed by a restart, so their count per program is its restarts. The counts are rewritten
atomically after each event; ``nrtrec status`` reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supervisor import childutils


def count(path: Path, process: str) -> None:
    try:
        counts = json.loads(path.read_text())
    except (OSError, ValueError):
        counts = {}
    counts[process] = int(counts.get(process, 0)) + 1
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(counts, sort_keys=True))
    temp.replace(path)


def main(path: Path) -> None:
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers["eventname"] in ("PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF"):
            fields, _ = childutils.eventdata(payload + "\n")
            count(path, fields["processname"])
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
