"""Suite ``metrics_topic``: records consumed from the ``metrics`` topic."""

from __future__ import annotations

import json
from collections.abc import Iterable

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from cinestream.schemas import METRIC_FIELDS

NAME = "metrics_topic"
FIELDS_OK = "record_has_exactly_the_spec_fields"
TYPES_OK = "record_fields_have_the_spec_types"
KEY_OK = "key_equals_window_type_pipe_window_start"

_TYPES: dict[str, tuple[type, ...]] = {
    "window_start": (str,),
    "window_end": (str,),
    "window_type": (str,),
    "count": (int,),
    "avg_rating": (float, int),
    "p50_rating": (float, int),
    "p95_rating": (float, int),
    "top_movies": (str,),
    "processing_time": (str,),
}


def _types_ok(record: dict) -> bool:
    return all(
        isinstance(record.get(f), _TYPES[f]) and not isinstance(record.get(f), bool)
        for f in METRIC_FIELDS
    )


def prepare(messages: Iterable[tuple[bytes | None, bytes | None]]) -> pd.DataFrame:
    """One row per (key, value) record with the derived checks."""
    rows = []
    for key, value in messages:
        try:
            record = json.loads(value or b"")
        except ValueError:
            record = None
        if not isinstance(record, dict):
            rows.append(
                {
                    "key": (key or b"").decode(errors="replace"),
                    FIELDS_OK: False,
                    TYPES_OK: False,
                    KEY_OK: False,
                }
            )
            continue
        key_text = (key or b"").decode(errors="replace")
        rows.append(
            {
                "key": key_text,
                FIELDS_OK: set(record) == set(METRIC_FIELDS),
                TYPES_OK: _types_ok(record),
                KEY_OK: key_text == f"{record.get('window_type')}|{record.get('window_start')}",
            }
        )
    return pd.DataFrame(rows, columns=["key", FIELDS_OK, TYPES_OK, KEY_OK])


def suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectColumnValuesToBeInSet(column=FIELDS_OK, value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column=TYPES_OK, value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column=KEY_OK, value_set=[True]),
        ],
    )
