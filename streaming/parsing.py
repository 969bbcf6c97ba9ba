"""Topic values to events, or to the dead letter that says why not."""

from __future__ import annotations

import time

from nrtrec.schemas import (
    ClickEvent,
    DeadLetter,
    InvalidRecord,
    ListingEvent,
    Topic,
    decode,
    model_for,
    payload_text,
)


def parse(
    topic: Topic,
    value: str | bytes,
    source_topic: str | None = None,
    max_clock_skew_s: float | None = None,
) -> ClickEvent | ListingEvent | DeadLetter:
    """The event in ``value``, or a dead letter naming every bad field; with
    ``max_clock_skew_s``, also a click dated further ahead of this clock than that.

    The Flink Kafka source hands over values only, so a dead letter made here carries no
    partition and offset; its payload is the value as received.
    """
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    try:
        event = decode(model_for(topic), raw)
        if max_clock_skew_s is not None and isinstance(event, ClickEvent):
            event.check_clock(time.time_ns() // 1_000_000, max_clock_skew_s)
        return event
    except InvalidRecord as e:
        return DeadLetter(
            source_topic=source_topic or topic.value, error=str(e), payload=payload_text(raw)
        )
    except Exception as e:  # anything else decode trips on is still the record's fault
        return DeadLetter(
            source_topic=source_topic or topic.value,
            error=f"{type(e).__name__}: {e}",
            payload=payload_text(raw),
        )
