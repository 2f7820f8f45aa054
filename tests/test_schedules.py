"""Schedules: the ordinary ones, LeRaC's layer-wise rise, and the stateful applier."""

import math

import pytest
import torch

from trainables.curriculum import rise
from trainables.schedules import Curriculum, LayerRateSchedule, OrdinarySchedule, RateScheduler


def ordinary(kind: str, **overrides) -> OrdinarySchedule:
    return OrdinarySchedule(**{"kind": kind, "eta0": 0.1, "total_steps": 100, **overrides})


class TestOrdinary:
    def test_constant(self):
        assert {ordinary("constant").rate(t) for t in range(100)} == {0.1}

    def test_step_at_milestones(self):
        schedule = ordinary("step", milestone_steps=(30, 60), gamma=0.1)
        assert schedule.rate(29) == pytest.approx(0.1)
        assert schedule.rate(30) == pytest.approx(0.01)
        assert schedule.rate(60) == pytest.approx(0.001)

    def test_cosine_endpoints_and_midpoint(self):
        schedule = ordinary("cosine", min_lr=0.001)
        assert schedule.rate(0) == pytest.approx(0.1)
        assert schedule.rate(50) == pytest.approx(0.001 + 0.099 / 2)
        assert schedule.rate(100) == pytest.approx(0.001)

    def test_warmup_then_cosine(self):
        schedule = ordinary("cosine", warmup_steps=10, start_step=10)
        assert [schedule.rate(t) for t in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])
        assert schedule.rate(10) == pytest.approx(0.1)
        assert schedule.rate(55) == pytest.approx(0.05)

    def test_cosine_starts_decaying_at_start_step(self):
        schedule = ordinary("cosine", start_step=20)
        assert schedule.rate(20) == pytest.approx(0.1)
        assert schedule.rate(60) == pytest.approx(0.05)


def lerac_schedule(**overrides) -> LayerRateSchedule:
    curriculum = Curriculum(
        initial=(0.1, 0.01, 0.001), k_steps=overrides.pop("k_steps", 20),
        shape=overrides.pop("shape", "exp"), update_steps=overrides.pop("update_steps", 1),
        rule=overrides.pop("rule", "eq9"), factor=overrides.pop("factor", 10.0),
    )
    return LayerRateSchedule(
        num_layers=3,
        ordinary=ordinary("cosine", start_step=curriculum.k_steps),
        curriculum=curriculum,
    )


@pytest.mark.parametrize("shape", ["exp", "linear", "log", "cosine"])
class TestLeracSchedule:
    def test_starts_at_initial_rates(self, shape):
        assert lerac_schedule(shape=shape).rates_at(0) == pytest.approx([0.1, 0.01, 0.001])

    def test_each_layer_follows_its_rise(self, shape):
        schedule = lerac_schedule(shape=shape)
        for t in (3, 10, 17):
            want = [rise(shape, t, 20, start, 0.1) for start in (0.1, 0.01, 0.001)]
            assert schedule.rates_at(t) == pytest.approx(want)

    def test_all_layers_at_eta0_at_k_then_ordinary(self, shape):
        schedule = lerac_schedule(shape=shape)
        assert schedule.rates_at(20) == pytest.approx([0.1] * 3)
        cosine = 0.1 * (1 + math.cos(math.pi * 40 / 80)) / 2
        assert schedule.rates_at(60) == pytest.approx([cosine] * 3)

    def test_deeper_layers_never_faster_during_rise(self, shape):
        schedule = lerac_schedule(shape=shape)
        for t in range(20):
            rates = schedule.rates_at(t)
            assert rates[0] >= rates[1] >= rates[2]

    def test_stepped_rise_moves_in_stairs(self, shape):
        schedule = lerac_schedule(shape=shape, update_steps=5)
        assert schedule.rates_at(5) == schedule.rates_at(9)
        assert schedule.rates_at(9) != schedule.rates_at(10)
        assert schedule.rates_at(4) == schedule.rates_at(0)


class TestSteppedRule:
    """The official code's rule: x10 per update until eta0, deep layers arriving last."""

    def test_each_update_multiplies_by_the_factor_until_eta0(self):
        schedule = lerac_schedule(rule="stepped", update_steps=4)
        assert schedule.rates_at(3) == pytest.approx([0.1, 0.01, 0.001])
        assert schedule.rates_at(4) == pytest.approx([0.1, 0.1, 0.01])
        assert schedule.rates_at(8) == pytest.approx([0.1, 0.1, 0.1])

    def test_layers_arrive_at_different_times(self):
        schedule = lerac_schedule(rule="stepped", update_steps=4)
        arrival = [min(t for t in range(20) if schedule.rates_at(t)[j] == pytest.approx(0.1))
                   for j in range(3)]
        assert arrival == [0, 4, 8]

    def test_never_above_eta0(self):
        schedule = lerac_schedule(rule="stepped", update_steps=1, factor=3.0)
        assert max(max(schedule.rates_at(t)) for t in range(40)) <= 0.1


class TestWarmupMatchesLerac:
    """A warm-up of length W decays from W, exactly as LeRaC's schedule decays from k."""

    def test_after_the_rise_both_follow_the_same_rates(self):
        warmup = LayerRateSchedule(num_layers=3, ordinary=ordinary("cosine", warmup_steps=20, start_step=20))
        lerac = lerac_schedule(k_steps=20)
        for t in range(20, 100, 7):
            assert warmup.rates_at(t) == pytest.approx(lerac.rates_at(t))

    def test_in_curriculum_only_before_k(self):
        lerac = lerac_schedule(k_steps=20)
        assert lerac.in_curriculum(19) and not lerac.in_curriculum(20)
        assert not LayerRateSchedule(num_layers=1, ordinary=ordinary("constant")).in_curriculum(0)


def test_multipliers_scale_rates():
    schedule = LayerRateSchedule(num_layers=2, ordinary=ordinary("constant"), multipliers=(1.0, 0.2))
    assert schedule.rates_at(7) == pytest.approx([0.1, 0.02])


class TestRateScheduler:
    def make(self) -> RateScheduler:
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
        optimizer = torch.optim.SGD([{"params": [p]} for p in params], lr=0.1)
        return RateScheduler(optimizer, lerac_schedule())

    def test_apply_sets_each_group(self):
        scheduler = self.make()
        for _ in range(7):
            scheduler.advance()
        scheduler.apply()
        lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
        assert lrs == pytest.approx(lerac_schedule().rates_at(7))

    def test_state_round_trip_continues_exactly(self):
        first, second = self.make(), self.make()
        for _ in range(11):
            first.advance()
        second.load_state_dict(first.state_dict())
        for _ in range(15):
            assert second.current_rates() == first.current_rates()
            first.advance()
            second.advance()
