"""Admission control's rule (order_svc/admission.py): Little's law on the sagas in flight and
the rate they finish at, with a floor; Retry-After from the same figures."""
from __future__ import annotations

import pytest

from order_svc.admission import Admission, Overloaded, SagaLoad

pytestmark = pytest.mark.unit


def test_a_cold_system_admits_up_to_the_floor_and_counts_each_admission_as_in_flight():
    admission = Admission(target_s=0.5, floor=3)
    assert [admission.admit() is None for _ in range(4)] == [True, True, True, False]
    assert admission.in_flight == 3 and (admission.admitted, admission.refused) == (3, 1)


def test_the_limit_is_the_finishing_rate_times_the_target():
    admission = Admission(target_s=0.5, floor=10, window_s=2.0)
    admission.observe(SagaLoad(in_flight=0, finished=400, window_s=2.0))  # 200 sagas/s
    assert admission.limit == 100
    admission.observe(SagaLoad(in_flight=99, finished=400, window_s=2.0))
    assert admission.admit() is None
    refusal = admission.admit()
    assert refusal is not None and refusal.in_flight == 100 and refusal.limit == 100
    assert "100 sagas in flight, finishing 200/s" in refusal.detail


def test_a_new_reading_replaces_the_admissions_counted_since_the_last():
    admission = Admission(target_s=1.0, floor=5)
    for _ in range(5):
        assert admission.admit() is None
    assert admission.admit() is not None
    admission.observe(SagaLoad(in_flight=2, finished=0, window_s=2.0))  # three finished meanwhile
    assert admission.in_flight == 2 and admission.admit() is None


def test_when_nothing_finishes_the_limit_falls_to_the_floor_and_retry_after_is_the_longest():
    admission = Admission(target_s=0.5, floor=8)
    admission.observe(SagaLoad(in_flight=50, finished=0, window_s=2.0))  # a participant is down
    refusal = admission.admit()
    assert refusal is not None and refusal.limit == 8 and refusal.retry_after_s == 30


def test_retry_after_is_the_time_the_excess_takes_to_finish_at_the_current_rate_in_whole_seconds():
    admission = Admission(target_s=0.5, floor=1, window_s=1.0)
    admission.observe(SagaLoad(in_flight=400, finished=100, window_s=1.0))  # limit 50, 351 too many
    assert admission.admit().retry_after_s == 4
    admission.observe(SagaLoad(in_flight=51, finished=100, window_s=1.0))
    assert admission.admit().retry_after_s == 1  # never below one second


def test_disabled_admits_everything():
    admission = Admission(target_s=0.5, floor=1, enabled=False)
    admission.observe(SagaLoad(in_flight=10_000, finished=0, window_s=2.0))
    assert all(admission.admit() is None for _ in range(100))


def test_overloaded_carries_its_refusal_and_says_it_in_one_line():
    admission = Admission(target_s=0.5, floor=1)
    admission.admit()
    refusal = admission.admit()
    error = Overloaded(refusal)
    assert error.refusal is refusal and "\n" not in str(error) and str(error).startswith("overloaded:")


@pytest.mark.parametrize("options", [dict(target_s=0, floor=1), dict(target_s=1, floor=0),
                                     dict(target_s=1, floor=1, window_s=0), dict(target_s=1, floor=1, recent_s=0)])
def test_nonsense_settings_are_refused(options):
    with pytest.raises(ValueError):
        Admission(**options)
