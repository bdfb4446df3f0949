"""Admission control's rule (order_svc/admission.py): Little's law on the standing sagas in
flight and the rate they finish at, with a floor; Retry-After from the same figures."""
from __future__ import annotations

import pytest

from order_svc.admission import Admission, Overloaded, SagaLoad

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock | None = None, **options) -> Admission:
    return Admission(clock=clock or Clock(), **{"target_s": 0.5, "floor": 10, "window_s": 2.0, **options})


def test_a_cold_system_admits_up_to_the_floor_and_counts_each_admission_as_in_flight():
    rule = admission(floor=3)
    assert [rule.admit() is None for _ in range(4)] == [True, True, True, False]
    assert rule.in_flight == 3 and (rule.admitted, rule.refused) == (3, 1)


def test_the_limit_is_the_finishing_rate_times_the_target():
    rule = admission()
    rule.observe(SagaLoad(in_flight=99, finished=400, window_s=2.0))  # 200 sagas/s
    assert rule.limit == 100
    assert rule.admit() is None
    refusal = rule.admit()
    assert refusal is not None and refusal.in_flight == 100 and refusal.limit == 100
    assert "100 sagas in flight, finishing 200/s" in refusal.detail


def test_a_new_reading_replaces_the_admissions_counted_since_the_last():
    clock = Clock()
    rule = admission(clock, target_s=1.0, floor=5)
    for _ in range(5):
        assert rule.admit() is None
    assert rule.admit() is not None
    clock.now += 2
    rule.observe(SagaLoad(in_flight=2, finished=0, window_s=2.0))  # three finished meanwhile
    assert rule.in_flight == 2 and rule.admit() is None


def test_a_moments_pile_up_is_not_a_standing_load_but_a_whole_second_of_one_is():
    clock = Clock()
    rule = admission(clock, floor=10)
    rule.observe(SagaLoad(in_flight=4, finished=0, window_s=2.0))
    clock.now += 0.25
    rule.observe(SagaLoad(in_flight=40, finished=0, window_s=2.0))  # a pause: sagas pile up for a moment
    assert rule.in_flight == 4 and rule.admit() is None
    for _ in range(4):
        clock.now += 0.25
        rule.observe(SagaLoad(in_flight=40, finished=0, window_s=2.0))  # still there a second later
    assert rule.in_flight == 40 and rule.admit() is not None


def test_a_late_reading_counts_the_sagas_finished_since_it_at_the_finishing_rate():
    # 100 sagas/s offered and finished, 12 in flight: the next reading is late (a busy event
    # loop); a second of admissions on top of the last reading alone would be 112 > 64.
    clock = Clock()
    rule = admission(clock, floor=64)
    rule.observe(SagaLoad(in_flight=12, finished=200, window_s=2.0))  # λ 100/s
    for _ in range(100):
        clock.now += 0.01
        assert rule.admit() is None
    assert rule.in_flight == 12


def test_a_stall_shows_in_the_next_reading_and_is_refused():
    clock = Clock()
    rule = admission(clock, floor=64)
    rule.observe(SagaLoad(in_flight=12, finished=200, window_s=2.0))
    for tick in range(1, 6):  # nothing finishes for over a second: every reading shows the pile
        clock.now += 0.25
        rule.observe(SagaLoad(in_flight=70 + 25 * tick, finished=0, window_s=2.0))
    assert rule.admit() is not None


def test_when_nothing_finishes_the_limit_falls_to_the_floor_and_retry_after_is_the_longest():
    rule = admission(floor=8)
    rule.observe(SagaLoad(in_flight=50, finished=0, window_s=2.0))  # a participant is down
    refusal = rule.admit()
    assert refusal is not None and refusal.limit == 8 and refusal.retry_after_s == 30


def test_retry_after_is_the_time_the_excess_takes_to_finish_at_the_current_rate_in_whole_seconds():
    clock = Clock()
    rule = admission(clock, floor=1, window_s=1.0)
    rule.observe(SagaLoad(in_flight=400, finished=100, window_s=1.0))  # limit 50, 351 too many
    assert rule.admit().retry_after_s == 4
    clock.now += 2
    rule.observe(SagaLoad(in_flight=51, finished=100, window_s=1.0))
    assert rule.admit().retry_after_s == 1  # never below one second


def test_disabled_admits_everything():
    rule = admission(floor=1, enabled=False)
    rule.observe(SagaLoad(in_flight=10_000, finished=0, window_s=2.0))
    assert all(rule.admit() is None for _ in range(100))


def test_overloaded_carries_its_refusal_and_says_it_in_one_line():
    rule = admission(floor=1)
    rule.admit()
    refusal = rule.admit()
    error = Overloaded(refusal)
    assert error.refusal is refusal and "\n" not in str(error) and str(error).startswith("overloaded:")


@pytest.mark.parametrize("options", [dict(target_s=0, floor=1), dict(target_s=1, floor=0),
                                     dict(target_s=1, floor=1, window_s=0), dict(target_s=1, floor=1, recent_s=0),
                                     dict(target_s=1, floor=1, standing_s=-1)])
def test_nonsense_settings_are_refused(options):
    with pytest.raises(ValueError):
        Admission(**options)


def test_sagas_admitted_between_readings_are_counted_once_whichever_reading_is_the_fewest():
    clock = Clock()
    rule = admission(clock, floor=10)
    rule.observe(SagaLoad(in_flight=5, finished=0, window_s=2.0))
    assert rule.admit() is None and rule.admit() is None
    clock.now += 0.25
    rule.observe(SagaLoad(in_flight=7, finished=0, window_s=2.0))  # the two admitted are in this reading
    assert rule.in_flight == 7  # not 5: the older reading plus its two admissions is 7 as well
    assert [rule.admit() is None for _ in range(4)] == [True, True, True, False]
