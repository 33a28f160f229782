"""Business calendar and due times.

same_day: the end of the working day when at least ``late_hours`` remain before it,
otherwise ``late_hours`` after receipt (a hazard reported at 17:00 or on a Sunday is
not left until the next morning). within_24h: 24 hours after receipt. normal: three
working days after receipt, counted from the next working-time instant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"


@dataclass(frozen=True)
class BusinessCalendar:
    timezone: str = DEFAULT_TZ
    workday_start: str = "09:00"
    workday_end: str = "18:00"
    weekend: tuple[int, ...] = (5, 6)
    holidays: tuple[str, ...] = ()
    extra_workdays: tuple[str, ...] = ()
    late_hours: float = 4.0
    normal_workdays: int = 3
    within_24h_hours: float = 24.0
    _holiday_dates: frozenset = field(init=False, repr=False, compare=False)
    _extra_dates: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_holiday_dates", frozenset(dt.date.fromisoformat(d) for d in self.holidays))
        object.__setattr__(self, "_extra_dates", frozenset(dt.date.fromisoformat(d) for d in self.extra_workdays))
        if self._start >= self._end:
            raise ValueError("workday_start must be before workday_end")
        ZoneInfo(self.timezone)

    @classmethod
    def from_dict(cls, data: dict | None) -> "BusinessCalendar":
        data = dict(data or {})
        for key in ("weekend", "holidays", "extra_workdays"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict:
        return {"timezone": self.timezone, "workday_start": self.workday_start,
                "workday_end": self.workday_end, "weekend": list(self.weekend),
                "holidays": list(self.holidays), "extra_workdays": list(self.extra_workdays),
                "late_hours": self.late_hours, "normal_workdays": self.normal_workdays,
                "within_24h_hours": self.within_24h_hours}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def _start(self) -> dt.time:
        return dt.time.fromisoformat(self.workday_start)

    @property
    def _end(self) -> dt.time:
        return dt.time.fromisoformat(self.workday_end)

    def is_workday(self, day: dt.date) -> bool:
        if day in self._extra_dates:
            return True
        return day.weekday() not in self.weekend and day not in self._holiday_dates

    def _next_working_instant(self, when: dt.datetime) -> dt.datetime:
        day = when.date()
        if self.is_workday(day) and when.time() < self._end:
            return max(when, dt.datetime.combine(day, self._start, when.tzinfo))
        day += dt.timedelta(days=1)
        while not self.is_workday(day):
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, self._start, when.tzinfo)

    def add_workdays(self, when: dt.datetime, days: int) -> dt.datetime:
        """``days`` working days after ``when``, at the same time of the working day."""
        start = self._next_working_instant(when)
        day = start.date()
        for _ in range(days):
            day += dt.timedelta(days=1)
            while not self.is_workday(day):
                day += dt.timedelta(days=1)
        return dt.datetime.combine(day, start.timetz())

    def due_at(self, received_at: dt.datetime, urgency: str) -> dt.datetime:
        """The due time for a ticket received at ``received_at`` (timezone-aware)."""
        if received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        local = received_at.astimezone(self.tz)
        if urgency == "same_day":
            late = local + dt.timedelta(hours=self.late_hours)
            if self.is_workday(local.date()) and local.time() >= self._start:
                end = dt.datetime.combine(local.date(), self._end, local.tzinfo)
                if end - local >= dt.timedelta(hours=self.late_hours):
                    return end
            elif self.is_workday(local.date()):
                return dt.datetime.combine(local.date(), self._end, local.tzinfo)
            return late
        if urgency == "within_24h":
            return local + dt.timedelta(hours=self.within_24h_hours)
        return self.add_workdays(local, self.normal_workdays)
