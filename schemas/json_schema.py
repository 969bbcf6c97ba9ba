"""JSON Schema files generated from the record models, for producers in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from nrtrec.schemas.codec import MODEL_OF_TOPIC
from nrtrec.schemas.records import UserVectors

SCHEMA_DIR = Path(__file__).parent / "json"


def generated() -> dict[str, str]:
    """File name → JSON text, one per topic plus the user-vector store record."""
    models = {topic.value: model for topic, model in MODEL_OF_TOPIC.items()}
    models["user-vectors"] = UserVectors
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in models.items()
    }


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generated().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the models generate."""
    return [
        name
        for name, text in generated().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
