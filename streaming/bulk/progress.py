"""How a bulk run reports progress: ``progress(stage, done, total)`` as each stage advances
(``total`` may grow while reading, since a partition's first offset is only an estimate of its
record count)."""

from collections.abc import Callable

READING, ENCODING, BUILDING = "reading listings", "encoding", "building indexes"

ProgressCallback = Callable[[str, int, int], None]
