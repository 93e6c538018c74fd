"""Paired tests over seeds, pure Python (no scipy): the paired t-test with an exact Student t distribution, the exact
sign test and the exact Wilcoxon signed-rank test, plus mean ± standard error.

With n paired seeds the exact rank tests cannot go below 2 / 2^n two-sided (0.0625 for 5 seeds): at 5 seeds only the
t-test can reach p < 0.01, and it assumes roughly normal differences. Report both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the error is 0 for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se: no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_diff: float  # mean of (a - b)
    se_diff: float
    t: float
    p_t: float  # paired t-test, two-sided
    p_sign: float  # exact sign test, two-sided (zero differences dropped)
    p_wilcoxon: float  # exact Wilcoxon signed-rank, two-sided (zero differences dropped)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sign_test(diffs: Sequence[float]) -> float:
    nonzero = [d for d in diffs if d != 0]
    n, k = len(nonzero), sum(d > 0 for d in nonzero)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def wilcoxon_exact(diffs: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p by enumerating all 2^n sign patterns (n <= 20; mid-ranks for ties)."""
    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    if n > 20:
        raise ValueError(f"wilcoxon_exact: {n} pairs is too many to enumerate (at most 20)")
    order = sorted(range(n), key=lambda i: abs(nonzero[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(nonzero[order[j + 1]]) == abs(nonzero[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    total = sum(ranks)
    w_plus = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    observed = abs(w_plus - total / 2)
    hits = sum(abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - total / 2) >= observed - 1e-12
               for signs in itertools.product((False, True), repeat=n))
    return hits / 2**n


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Compare paired samples a[i] vs b[i] (same seed): t-test on the differences, sign and Wilcoxon tests."""
    if len(a) != len(b):
        raise ValueError(f"paired_test: {len(a)} values against {len(b)}: pairs must match")
    if len(a) < 2:
        raise ValueError("paired_test: needs at least 2 pairs")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, se = mean_se(diffs)
    if se == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    return PairedTest(n=len(diffs), mean_diff=mean, se_diff=se, t=t, p_t=t_two_sided_p(t, len(diffs) - 1),
                      p_sign=sign_test(diffs), p_wilcoxon=wilcoxon_exact(diffs))
