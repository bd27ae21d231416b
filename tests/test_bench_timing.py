"""bench's stopping rule: the median's interval, when a candidate has been timed enough, and the time box."""

import random
import statistics

import pytest

from distilforge.bench import BenchSettings
from distilforge.bench.timing import (
    Timed,
    _worst_ratio_error,
    median_interval,
    ratio_error,
    relative_error,
    time_box,
    used_rounds,
)


def _timed(name, rounds, *, runs=8):
    t = Timed(name, worker=None, runs=runs, sweep=[])
    for r, values in enumerate(rounds):
        t.times.setdefault(0, {})[r] = list(values)
    return t


def test_median_interval_brackets_the_median_and_narrows_with_more_samples():
    rng = random.Random(0)
    few = [rng.gauss(25, 2) for _ in range(16)]
    many = few + [rng.gauss(25, 2) for _ in range(240)]
    for samples in (few, many):
        median, low, high = median_interval(samples)
        assert low <= median <= high and median == statistics.median(samples)
    assert relative_error(many) < relative_error(few) / 2  # ~1/sqrt(n)


def test_the_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = random.Random(1)
    covered = 0
    for _ in range(400):
        _, low, high = median_interval([rng.expovariate(1.0) for _ in range(40)])
        covered += low <= 0.6931 <= high  # the exponential's median: ln 2
    assert 0.92 <= covered / 400 <= 0.99


def test_one_sample_is_never_known_well_enough():
    assert relative_error([3.0]) == float("inf")


def test_the_ratio_error_follows_the_rounds_drift_not_the_runs_spread():
    """Both candidates slow down together in some rounds (the machine drifting): the ratio stays known, while a
    candidate whose ratio itself moves from round to round is not."""
    rng = random.Random(2)
    drift = [rng.choice([1.0, 1.3]) for _ in range(8)]
    eager = _timed("eager", [[30.0 * d * rng.uniform(0.97, 1.03) for _ in range(5)] for d in drift])
    steady = _timed("steady", [[20.0 * d * rng.uniform(0.97, 1.03) for _ in range(5)] for d in drift])
    jumpy = _timed("jumpy", [[20.0 * rng.choice([1.0, 1.4]) * rng.uniform(0.97, 1.03) for _ in range(5)]
                             for _ in drift])
    rounds = list(range(8))
    assert ratio_error(steady, eager, rounds) < 0.03 < 0.1 < ratio_error(jumpy, eager, rounds)
    assert ratio_error(steady, eager, rounds[:1]) == float("inf")
    plan = BenchSettings().plan()
    quiet = [0.0] * 8
    assert _worst_ratio_error([eager, steady], "eager", quiet, plan) <= plan.rel_error
    assert _worst_ratio_error([eager, steady, jumpy], "eager", quiet, plan) > plan.rel_error


def test_busy_rounds_are_left_out_only_while_enough_quiet_ones_remain():
    plan = BenchSettings().plan()
    t = _timed("a", [[25.0] * 8] * 5)
    assert used_rounds(t, [0.0, 0.5, 0.0, 0.0, 0.0], plan) == [0, 2, 3, 4]
    assert used_rounds(t, [0.5, 0.5, 0.5, 0.0, 0.0], plan) == [0, 1, 2, 3, 4]  # 2 quiet < min_rounds: all


@pytest.mark.parametrize("factor, boxed", [(5.0, False), (40.0, True)])
def test_a_candidate_far_slower_than_the_median_one_is_time_boxed(factor, boxed):
    plan = BenchSettings().plan()
    live = [_timed(f"c{i}", [[20.0 + i] * 8]) for i in range(4)] + [_timed("slow", [[20.0 * factor] * 8])]
    time_box(live, plan)
    slow = live[-1]
    assert slow.time_boxed is boxed and not any(t.time_boxed for t in live[:-1])
    if boxed:  # box_ms of runs a round, at least 2; it does not hold the others' rounds up
        assert slow.runs == max(2, int(plan.box_ms / (20.0 * factor)))
        rng = random.Random(3)
        eager = _timed("eager", [[30.0 * rng.uniform(0.99, 1.01) for _ in range(5)] for _ in range(4)])
        steady = _timed("steady", [[20.0 * rng.uniform(0.99, 1.01) for _ in range(5)] for _ in range(4)])
        slow.times[0] = {r: [20.0 * factor * rng.choice([1.0, 1.5])] * 2 for r in range(4)}
        assert _worst_ratio_error([eager, steady, slow], "eager", [0.0] * 4, plan) <= plan.rel_error
