"""Errors raised by the schemas package."""

from __future__ import annotations

from pydantic import ValidationError


class SchemaError(Exception):
    """Base of every error this package raises."""


class InvalidRecord(SchemaError):
    """A record that does not satisfy its model; ``str()`` names each bad field and why."""

    def __init__(self, model: str, problems: list[str]):
        self.model = model
        self.problems = problems
        super().__init__(f"invalid {model}: " + "; ".join(problems))

    @classmethod
    def from_validation_error(cls, model: str, error: ValidationError) -> InvalidRecord:
        problems = []
        for e in error.errors(include_url=False):
            field = ".".join(str(p) for p in e["loc"]) or "<record>"
            # A model-level check names its fields in its own message.
            message = e["msg"].removeprefix("Value error, ")
            problem = f"{field}: {message}"
            if e["loc"] and e["type"] not in ("missing", "json_invalid") and "input" in e:
                problem += f" (got {_short(e['input'])})"
            problems.append(problem)
        return cls(model, problems)


class InvalidFilter(SchemaError):
    """A filter outside the grammar (``schemas.filters``); the message says which attribute
    and why."""

    code = "invalid_filter"


class UnknownTopic(SchemaError):
    """A topic that has no record model."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
