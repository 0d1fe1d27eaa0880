"""Which checkpoint-ahead-of-store states the processor may read again, and which it refuses."""

from __future__ import annotations

import pytest

from cinestream.store.checkpoints import StoredCheckpoint
from cinestream.stream.start_plan import unfinished_commit


@pytest.mark.parametrize(
    ("done", "last", "handed_off", "recoverable"),
    [
        (5, 4, 5, True),  # stopped during batch 5's background commit
        (0, None, 0, True),  # ... during the first batch's
        (5, 5, 5, False),  # committed: nothing to read again
        (5, 3, 5, False),  # two batches missing: not what a stopped hand-off leaves
        (5, 4, 4, False),  # the store lost batch 5 without a hand-off of it (restored)
        (5, 4, None, False),  # no hand-off recorded (tables emptied with the lock table)
        (0, None, None, False),  # store emptied after the first batch
        (None, None, 0, False),  # no batch done in the checkpoint
    ],
)
def test_only_the_one_handed_off_batch_is_read_again(
    done: int | None, last: int | None, handed_off: int | None, recoverable: bool
) -> None:
    batches = 0 if last is None else last + 1
    stored = StoredCheckpoint("id", batches, last, handed_off)
    assert unfinished_commit(done, stored) is recoverable
