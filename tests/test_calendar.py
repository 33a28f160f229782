import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from triage.calendar import BusinessCalendar

SH = ZoneInfo("Asia/Shanghai")


def at(*args):
    return dt.datetime(*args, tzinfo=SH)


@pytest.mark.parametrize("received, urgency, due", [
    (at(2026, 11, 24, 10, 0), "same_day", at(2026, 11, 24, 18, 0)),     # Tuesday morning
    (at(2026, 11, 24, 7, 30), "same_day", at(2026, 11, 24, 18, 0)),     # before opening
    (at(2026, 11, 24, 15, 0), "same_day", at(2026, 11, 24, 19, 0)),     # late: 4 hours
    (at(2026, 11, 28, 11, 0), "same_day", at(2026, 11, 28, 15, 0)),     # Saturday: 4 hours
    (at(2026, 11, 24, 10, 0), "within_24h", at(2026, 11, 25, 10, 0)),
    (at(2026, 11, 24, 10, 0), "normal", at(2026, 11, 27, 10, 0)),       # Tue + 3 working days
    (at(2026, 11, 27, 10, 0), "normal", at(2026, 12, 2, 10, 0)),        # Fri -> Wed
    (at(2026, 11, 27, 20, 0), "normal", at(2026, 12, 3, 9, 0)),         # Fri evening -> Mon 9:00 + 3
])
def test_due_at_follows_the_business_calendar(received, urgency, due):
    assert BusinessCalendar().due_at(received, urgency) == due


def test_holidays_and_extra_workdays_are_respected():
    cal = BusinessCalendar(holidays=("2026-11-25",), extra_workdays=("2026-11-28",))
    assert cal.due_at(at(2026, 11, 24, 10, 0), "normal") == at(2026, 11, 28, 10, 0)


def test_due_at_converts_other_timezones():
    received = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.timezone.utc)  # 10:00 in Shanghai
    assert BusinessCalendar().due_at(received, "same_day") == at(2026, 11, 24, 18, 0)


def test_naive_times_and_bad_hours_are_refused():
    with pytest.raises(ValueError):
        BusinessCalendar().due_at(dt.datetime(2026, 11, 24, 10), "normal")
    with pytest.raises(ValueError):
        BusinessCalendar(workday_start="18:00", workday_end="09:00")


def test_calendar_round_trips_through_a_dict():
    cal = BusinessCalendar(holidays=("2026-10-01",), late_hours=2)
    assert BusinessCalendar.from_dict(cal.to_dict()) == cal
