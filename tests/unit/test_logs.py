import json
import logging

from nrtrec.core import logs


def test_json_logs_are_one_object_per_line_with_extra_fields(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json")
        logging.getLogger("nrtrec.test").info("applied", extra={"partition": 3, "offset": 41})
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert record["message"] == "applied"
    assert record["level"] == "INFO" and record["logger"] == "nrtrec.test"
    assert record["partition"] == 3 and record["offset"] == 41
    assert "ts" in record
