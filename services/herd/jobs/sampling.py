"""A reproducible sample of a document set, for calibration jobs (`herd submit --sample N --seed S`)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from herd.input_errors import InputError
from herd.jobs.documents import Record


def sample(records: Iterable[Record], n: int, seed: int = 0) -> Iterator[Record]:
    """`n` records drawn uniformly without replacement (reservoir sampling, Algorithm R), yielded in
    their original order. Same input order and seed: same sample. Fewer than `n` records: all of them.

    Memory: O(n) records. Raises InputError for n < 1 (an empty sample cannot calibrate anything).
    """
    if n < 1:
        raise InputError(f"--sample must be at least 1 (got {n}): an empty sample cannot calibrate anything")
    rng = random.Random(seed)
    kept: list[tuple[int, Record]] = []
    for i, record in enumerate(records):
        if i < n:
            kept.append((i, record))
        else:
            j = rng.randint(0, i)
            if j < n:
                kept[j] = (i, record)
    for _, record in sorted(kept, key=lambda item: item[0]):
        yield record
