"""The one way a benchmark times a piece of work in process: run it `repeat` times, keep every duration."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Timings(Generic[T]):
    """Wall-clock seconds of each run (time.perf_counter) and the last run's result."""

    seconds: tuple[float, ...]
    result: T

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], T], repeat: int = 1) -> Timings[T]:
    """Run `fn` `repeat` (>= 1) times back to back."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return Timings(tuple(seconds), result)
