"""The paired tests of harness.analysis.stats against hand values and, where installed, scipy."""

from __future__ import annotations

import math

import pytest

from harness.analysis.stats import mean_se, paired_test, sign_test, t_two_sided_p, wilcoxon_exact


def test_mean_se_by_hand():
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3 / 4))
    assert mean_se([7.0]) == (7.0, 0.0)


def test_t_distribution_known_values():
    # two-sided critical values of Student's t: t_{0.975, 4} = 2.776445, t_{0.995, 4} = 4.604095
    assert t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(4.604095, 4) == pytest.approx(0.01, abs=1e-6)
    assert t_two_sided_p(0.0, 4) == pytest.approx(1.0)
    assert t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)  # large df -> normal


def test_exact_rank_tests_by_hand():
    assert sign_test([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # the smallest two-sided p with 5 pairs
    assert wilcoxon_exact([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert wilcoxon_exact([-1, 2, 3, 4, 5]) == pytest.approx(4 / 32)  # W+ = 14 or more extreme: {15, 14} each side
    assert sign_test([0, 0]) == 1.0


def test_paired_test_fields_and_errors():
    res = paired_test([2.0, 3.0, 4.0, 5.0, 6.5], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert res.n == 5 and res.mean_diff == pytest.approx(1.1)
    assert res.p_t < 0.01 and res.p_wilcoxon == pytest.approx(2 / 32)
    assert paired_test([1.0, 2.0], [1.0, 2.0]).p_t == 1.0
    assert paired_test([2.0, 3.0], [1.0, 2.0]).p_t == 0.0  # a constant non-zero shift
    with pytest.raises(ValueError, match="pairs must match"):
        paired_test([1.0], [1.0, 2.0])


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = [0.91, 1.32, 1.10, 0.85, 1.27, 1.01]
    b = [0.88, 1.21, 1.13, 0.70, 1.20, 0.93]
    res = paired_test(a, b)
    assert res.p_t == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert res.p_wilcoxon == pytest.approx(stats.wilcoxon(a, b, method="exact").pvalue, rel=1e-9)
    for t, df in [(0.3, 2), (2.5, 4), (7.0, 9), (-3.1, 30)]:
        assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
