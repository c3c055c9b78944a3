"""The scorer's outputs and state are bit-identical to those recorded before its fast path (scorer_golden)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer.tails import gaussian_surprise, upper_surprise
from tests.unit.scorer_golden import CASES, STUCK_CASES, case_key, fixture_of, run


@pytest.mark.parametrize(("spec", "scaled", "domain"), CASES + STUCK_CASES,
                         ids=[case_key(*c) for c in CASES + STUCK_CASES])
def test_scorer_outputs_and_state_are_bit_identical_to_the_recorded_ones(spec: str, scaled: bool,
                                                                        domain: str) -> None:
    golden = np.load(fixture_of(spec))
    prefix = case_key(spec, scaled, domain) + "|"
    expected = {k[len(prefix):]: golden[k] for k in golden.files if k.startswith(prefix)}
    got = run(spec, scaled, domain)
    assert sorted(got) == sorted(expected)
    continued = expected["alarm"] & ~expected["is_anomaly"]  # alarms that continue an open incident
    assert expected["is_anomaly"].any() and continued.any() and not np.isfinite(expected["expected"]).all()
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name].view(np.uint8), want.view(np.uint8), err_msg=name)


def test_tails_of_mixed_signs_nan_and_scalars_match_their_one_point_values() -> None:
    """The x < 0 branch of ln erfc is evaluated at those points only: same numbers as point by point."""
    z = np.array([-3.0, np.nan, 0.0, -0.0, 2.5, -40.0, 40.0])
    whole = upper_surprise(z)
    one_by_one = np.array([upper_surprise(np.float64(v)) for v in z])
    np.testing.assert_array_equal(whole, one_by_one)
    assert np.isnan(whole[1]) and whole[0] < 0.01 and whole[4] > 2
    np.testing.assert_array_equal(gaussian_surprise(z[:2]), [gaussian_surprise(np.float64(v)) for v in z[:2]])
