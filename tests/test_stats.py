import numpy as np

from kickbench.stats import bootstrap_ci


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    x = np.r_[np.ones(30), np.zeros(70)]
    mean, lo, hi = bootstrap_ci(x)
    assert mean == 0.3 and lo < 0.3 < hi
    assert 0.18 < lo < 0.25 and 0.35 < hi < 0.42  # ~ normal approx 0.3 +- 0.09
    assert bootstrap_ci(x) == (mean, lo, hi)


def test_constant_scores_have_a_zero_width_interval():
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
