"""Experiment arms and the experiment report's arithmetic, on hand-computed numbers."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from nrtrec.core.settings import ArmSettings, ExperimentSettings, Settings
from nrtrec.recommender_app.arms import DEFAULT, Arms, draw
from nrtrec.recommender_app.experiment import aggregate, wilson, z_of
from nrtrec.schemas import ClickEvent, Impression


def test_wilson_interval_matches_hand_computed_values():
    # 3 of 10 at z = 1.96: center (0.3 + 1.9208/10) / 1.38416 = 0.35551,
    # half 1.96 * sqrt(0.021 + 0.009604) / 1.38416 = 0.24772.
    low, high = wilson(3, 10, 1.96)
    assert low == pytest.approx(0.10779, abs=1e-5) and high == pytest.approx(0.60322, abs=1e-5)
    # 1 of 2: symmetric around 0.5, half 1.96 * sqrt(0.125 + 0.2401) / 2.9208 = 0.40547.
    assert wilson(1, 2, 1.96) == pytest.approx((0.09453, 0.90547), abs=1e-5)
    # At 0 and at n successes the interval is not empty: z²/(n + z²) = 3.8416 / 13.8416.
    assert wilson(0, 10, 1.96) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert wilson(10, 10, 1.96) == pytest.approx((0.72246, 1.0), abs=1e-5)
    assert wilson(0, 0, 1.96) is None
    assert z_of(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        z_of(1.0)


R1, R2, R3, R4, R5, R6, R9 = (f"{i:032x}" for i in (1, 2, 3, 4, 5, 6, 9))


def _impression(request_id, user, arm, items, ts, source="personalized", experiment="ab"):
    return Impression(
        request_id=request_id,
        experiment=experiment,
        user_id=user,
        arm=arm,
        model_version=None if source == "popular" else 1,
        source=source,
        items=items,
        ts=ts,
    )


def _click(event_id, user, item, ts, request_id=None):
    return ClickEvent(
        event_id=event_id,
        user_id=user,
        item_id=item,
        action="click",
        ts=ts,
        request_id=request_id,
    )


def test_the_report_counts_per_arm_as_computed_by_hand():
    impressions = [
        _impression(R1, "a", "control", ["1", "2", "3"], 100, "popular"),
        _impression(R2, "a", "control", ["4", "5"], 200, "popular"),
        _impression(R3, "b", "v1", ["1", "6"], 100),
        _impression(R4, "c", "v1", ["7"], 100, "older-version"),
        _impression(R4, "c", "v1", ["7"], 100, "older-version"),  # sent twice: counts once
        _impression(R5, "d", "control", ["1"], 100, "popular", experiment="other"),
        _impression(R6, "e", "default", ["1"], 100, experiment=None),
    ]
    clicks = [
        _click("e1", "a", "2", 150, R1),  # control, on its list
        _click("e1", "a", "2", 150, R1),  # the same event again: once
        _click("e2", "a", "3", 160, R1),  # a second click on the same list
        _click("e3", "a", "9", 250),  # no list: counts only among the user's clicks
        _click("e4", "a", "8", 50),  # before the user's first impression: not counted
        _click("e5", "b", "6", 120, R3),  # v1, on its list
        _click("e6", "b", "2", 130, R3),  # names the list, item not in it: not credited
        _click("e7", "c", "7", 150, R1),  # another user's list: unmatched
        _click("e8", "z", "1", 150, R9),  # a list no impression has: unmatched
        _click("e9", "b", "1", 50, R3),  # credited although its ts is early (a client's clock)
        _click("e10", "f", "1", 150),  # a user outside the experiment
    ]
    report = aggregate(impressions, clicks, "ab", arms=[("control", None), ("v1", 1), ("v2", 2)])
    control, v1, v2 = report.arms
    assert (control.arm, control.model_version, v1.arm, v2.arm) == ("control", None, "v1", "v2")
    assert (control.users, control.impressions, control.clicked, control.clicks) == (1, 2, 1, 2)
    # e1, e2, e3 (not e4, before the first impression at ts 100).
    assert control.user_clicks == 3 and control.recommended_share == pytest.approx(2 / 3)
    assert control.ctr == 0.5 and (control.ctr_low, control.ctr_high) == wilson(1, 2, z_of(0.95))
    assert control.sources == {"popular": 2}
    assert (v1.users, v1.impressions, v1.clicked, v1.clicks) == (2, 2, 1, 2)
    # e5, e6, e9 of b and e7 of c.
    assert v1.user_clicks == 4 and v1.recommended_share == 0.5
    assert v1.sources == {"older-version": 1, "personalized": 1}
    # An arm of the settings nothing was served under: zeros, no rates.
    assert (v2.impressions, v2.ctr, v2.ctr_low, v2.recommended_share) == (0, None, None, None)
    assert report.clicks_unmatched == 2
    assert (report.impressions_read, report.clicks_read) == (7, 11)


def test_outside_an_experiment_the_default_arm_is_reported():
    impressions = [
        _impression(R1, "a", "default", ["1"], 100, experiment=None),
        _impression(R2, "b", "v1", ["1"], 100),
    ]
    report = aggregate(impressions, [_click("e1", "a", "1", 120, R1)], None)
    [row] = report.arms
    assert (row.arm, row.impressions, row.clicks, row.ctr) == ("default", 1, 1, 1.0)


def test_an_arm_is_a_stable_hash_of_experiment_and_user():
    digest = hashlib.blake2b(b"ab-1\x00u1", digest_size=8).digest()
    assert draw("ab-1", "u1") == int.from_bytes(digest, "big") / 2**64
    experiment = ExperimentSettings(
        name="ab-1",
        arms=[
            ArmSettings(name="control", weight=1),
            ArmSettings(name="v2", model_version=2, weight=3),
        ],
    )
    arms = Arms(experiment)
    users = [f"user-{i}" for i in range(20_000)]
    assigned = [arms.assign(u) for u in users]
    # Stable: another Arms (another process, another app) draws the same.
    assert [Arms(experiment).assign(u) for u in users[:500]] == assigned[:500]
    # The cut follows the weights: [0, 0.25) control, [0.25, 1) v2.
    pairs = list(zip(users, assigned, strict=True))
    assert all((a.name == "control") == (draw("ab-1", u) < 0.25) for u, a in pairs)
    share = sum(a.name == "control" for a in assigned) / len(users)
    assert 0.23 < share < 0.27, share
    control = next(a for a in assigned if a.name == "control")
    treatment = next(a for a in assigned if a.name == "v2")
    assert control.control and control.model_version is None
    assert not treatment.control and treatment.model_version == 2
    # Another experiment name is another draw.
    renamed = Arms(experiment.model_copy(update={"name": "ab-2"}))
    moved = sum(renamed.assign(u).name != a.name for u, a in pairs)
    assert 0.3 < moved / len(users) < 0.45, moved  # 2 * 0.25 * 0.75 = 0.375 expected


def test_without_an_experiment_every_user_is_in_the_default_arm():
    arms = Arms(ExperimentSettings())
    assert arms.experiment is None
    assert arms.assign("u1") == DEFAULT and DEFAULT.name == "default"
    assert DEFAULT.model_version is None and not DEFAULT.control


def test_experiment_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("NRTREC_EXPERIMENT__NAME", "ab-1")
    monkeypatch.setenv(
        "NRTREC_EXPERIMENT__ARMS",
        '[{"name": "control"}, {"name": "v2", "model_version": 2, "weight": 3}]',
    )
    experiment = Settings().experiment
    assert experiment.name == "ab-1"
    assert [(a.name, a.model_version, a.weight) for a in experiment.arms] == [
        ("control", None, 1.0),
        ("v2", 2, 3.0),
    ]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "ab"}, "has no arms"),
        ({"arms": [{"name": "a"}]}, "no experiment name"),
        ({"name": "ab", "arms": [{"name": "a"}, {"name": "a"}]}, "must differ"),
        ({"name": "ab", "arms": [{"name": "default"}]}, "outside an experiment"),
        ({"name": "a b", "arms": [{"name": "a"}]}, "letters, digits"),
        ({"name": "ab", "arms": [{"name": "a", "weight": 0}]}, "greater than 0"),
        ({"name": "ab", "arms": [{"name": "a", "model_version": 0}]}, "greater than or equal"),
    ],
)
def test_bad_experiment_settings_say_what_is_wrong(fields, says):
    with pytest.raises(ValidationError, match=says):
        ExperimentSettings.model_validate(fields)
