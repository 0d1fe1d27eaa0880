"""The hourly backfill's timetable: automatic catchup bounded, backfills unbounded.

Airflow bounds both the scheduler's catchup and backfills by a DAG's ``start_date``. The hourly
backfill needs them apart: on a fresh stack the scheduler should catch up only a few hours
(``CINESTREAM_BACKFILL_CATCHUP`` before the first start), while a backfill created from the UI or
the REST API must reach any past day. So the DAG keeps an old ``start_date`` and this timetable
starts the scheduler's first automatic run at ``catchup_from``. Registered with Airflow by
``plugins/cinestream_timetables.py`` (custom timetables must be, to be serialized).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable
from pendulum import DateTime


class CatchupBoundedCronTimetable(CronDataIntervalTimetable):
    """Cron data intervals whose automatic catchup begins at ``catchup_from``.

    The scheduler asks for the first run with no last run and an open-ended restriction (the
    DAG's start and end dates); only that question is bounded. A backfill iterates a closed
    range (``latest`` set) and gets every interval of it.
    """

    def __init__(self, cron: str, timezone: Any, catchup_from: DateTime) -> None:
        super().__init__(cron, timezone)
        self.catchup_from = catchup_from

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if (
            last_automated_data_interval is None
            and restriction.catchup
            and restriction.latest is None
            and (restriction.earliest is None or restriction.earliest < self.catchup_from)
        ):
            restriction = TimeRestriction(self.catchup_from, None, True)
        return super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )

    @property
    def summary(self) -> str:
        return f"{self._expression}, catchup from {self.catchup_from.isoformat()}"

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "catchup_from": self.catchup_from.isoformat()}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> CatchupBoundedCronTimetable:
        base = CronDataIntervalTimetable.deserialize(data)
        catchup_from = pendulum.parse(data["catchup_from"])
        return cls(data["expression"], base._timezone, catchup_from)  # type: ignore[attr-defined,arg-type]
