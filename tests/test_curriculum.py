"""The curriculum math against REGIMES.md's formulas."""

import math

import pytest

from trainables.curriculum import SHAPES, initial_rates, lowered_initial_rates, rise


def expected(shape: str, t: float, k: float, start: float, target: float) -> float:
    """REGIMES.md's formulas, written out independently of the implementation."""
    if t >= k:
        return target
    if shape == "exp":
        c = 10.0
        return start * c ** ((t / k) * math.log(target / start, c))
    if shape == "linear":
        return start + (target - start) * t / k
    if shape == "log":
        return start + (target - start) * math.log(1 + t) / math.log(1 + k)
    return start + (target - start) * (1 - math.cos(math.pi * t / k)) / 2


class TestInitialRates:
    def test_official_resnet18_values(self):
        rates = initial_rates(10, 0.1, 0.1, 1e-6)
        want = [0.1, 1e-2, 1e-3, 1e-4, 1e-5] + [1e-6] * 5
        assert rates == pytest.approx(want, rel=1e-9)

    def test_decay_base_one_gives_no_curriculum(self):
        assert initial_rates(4, 0.05, 1.0, 0.0) == [0.05] * 4

    def test_floor_never_exceeds_eta0(self):
        assert initial_rates(3, 0.01, 0.5, 0.1) == [0.01] * 3

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"num_layers": 0, "eta0": 0.1, "decay_base": 0.1, "eta_min": 0.0},
            {"num_layers": 3, "eta0": 0.1, "decay_base": 0.0, "eta_min": 0.0},
            {"num_layers": 3, "eta0": 0.1, "decay_base": 1.5, "eta_min": 0.0},
            {"num_layers": 3, "eta0": -1.0, "decay_base": 0.1, "eta_min": 0.0},
            {"num_layers": 3, "eta0": 0.1, "decay_base": 0.1, "eta_min": -1.0},
        ],
    )
    def test_bad_arguments(self, kwargs):
        with pytest.raises(ValueError):
            initial_rates(**kwargs)


@pytest.mark.parametrize("shape", SHAPES)
class TestRise:
    @pytest.mark.parametrize("k", [1, 7, 100, 2500])
    @pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 0.999])
    def test_matches_formula(self, shape, k, fraction):
        t = fraction * k
        assert rise(shape, t, k, 1e-5, 0.1) == pytest.approx(expected(shape, t, k, 1e-5, 0.1), rel=1e-9)

    @pytest.mark.parametrize("t", [50, 51, 1000])
    def test_target_from_k_on(self, shape, t):
        assert rise(shape, t, 50, 1e-4, 0.1) == 0.1

    def test_starts_at_start(self, shape):
        assert rise(shape, 0, 50, 1e-4, 0.1) == pytest.approx(1e-4)

    def test_monotone_and_bounded(self, shape):
        values = [rise(shape, t, 200, 1e-6, 0.1) for t in range(0, 201)]
        assert all(a <= b for a, b in zip(values, values[1:], strict=False))
        assert min(values) >= 1e-6 and max(values) == 0.1

    def test_flat_when_start_equals_target(self, shape):
        assert [rise(shape, t, 10, 0.1, 0.1) for t in range(12)] == pytest.approx([0.1] * 12)


def test_exp_is_geometric_interpolation():
    assert rise("exp", 5, 10, 1e-4, 1e-2) == pytest.approx(1e-3)


def test_shapes_differ_midway():
    midway = {shape: rise(shape, 25, 100, 1e-4, 0.1) for shape in SHAPES}
    assert len({round(v, 12) for v in midway.values()}) == len(SHAPES)


def test_unknown_shape():
    with pytest.raises(ValueError, match="unknown rise shape 'square'"):
        rise("square", 1, 10, 0.01, 0.1)


class TestLoweredInitialRates:
    def test_only_the_deepest_groups_start_low(self):
        """The official BERT variant: pooler and classifier start low, the rest at eta0."""
        rates = lowered_initial_rates(7, 5e-5, 0.1, 1e-9, lowered=2)
        assert rates == pytest.approx([5e-5] * 5 + [5e-6, 5e-7], rel=1e-9)

    def test_the_floor_applies_to_the_lowered_groups(self):
        assert lowered_initial_rates(5, 0.1, 0.01, 1e-4, lowered=3) == pytest.approx([0.1, 0.1, 1e-3, 1e-4, 1e-4])

    @pytest.mark.parametrize("lowered", [0, 7, 9])
    def test_zero_or_all_groups_is_the_paper_rule(self, lowered):
        assert lowered_initial_rates(7, 0.1, 0.1, 1e-6, lowered=lowered) == initial_rates(7, 0.1, 0.1, 1e-6)
