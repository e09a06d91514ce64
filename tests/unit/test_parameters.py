"""parameters.py: the limits declared once, read back as checks, words and schema bounds."""

from __future__ import annotations

import math

import pytest

from tunelab.parameters import (
    HyperparameterSettings,
    TunedModelSettings,
    bounds,
    problems,
    studio_limits,
)


@pytest.mark.parametrize(("value", "ok"), [
    (1, True), (512, True), (0, False), (513, False), (4.0, False), (True, False), ("4", False),
])
def test_a_whole_number_field_takes_whole_numbers_in_range(value, ok):
    found = problems(HyperparameterSettings, {"batch_size": value})
    assert (not found) is ok, found


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1e-9, 1000.5])
def test_a_rate_must_be_finite_positive_and_bounded(value):
    [p] = problems(HyperparameterSettings, {"learning_rate": value})
    assert p.field == "learningRate" and "above 0 and at most 1000" in p.message


def test_unset_values_are_no_problem():
    assert problems(TunedModelSettings, dict.fromkeys(TunedModelSettings.model_fields)) == []


def test_the_studio_limits_read_the_declared_bounds():
    limits = studio_limits(max_description_chars=300)
    assert limits["batchSize"]["maximum"] == bounds(HyperparameterSettings, "batch_size").maximum
    assert limits["topP"] == {**limits["topP"], "exclusiveMinimum": 0, "maximum": 1,
                              "integer": False}
    assert limits["description"]["maxLength"] == 300
    assert "maxLength" not in studio_limits()["description"]  # no limit set: none sent
