"""Registers cinestream's custom timetable with Airflow (needed to serialize the DAG using it)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from cinestream.orchestration.timetables import CatchupBoundedCronTimetable


class CinestreamTimetablesPlugin(AirflowPlugin):
    name = "cinestream_timetables"
    timetables = [CatchupBoundedCronTimetable]
