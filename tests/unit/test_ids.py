"""The id rule: a fast path for common ids, the regex for the rest; both say the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nrtrec.schemas.types import _ID, _check_id


@given(st.text(min_size=1, max_size=12))
def test_an_id_is_accepted_exactly_when_the_pattern_matches(value: str) -> None:
    if _ID.match(value):
        assert _check_id(value) == value
    else:
        with pytest.raises(ValueError, match="an id has no"):
            _check_id(value)


@pytest.mark.parametrize("value", [" a", "a ", "a/b", "a\tb", "a\x7f", "\x85a", "a\u2028"])
def test_edge_cases_of_the_fast_path_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        _check_id(value)
