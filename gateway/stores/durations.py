"""Duration percentiles from a histogram the database computes.

SQLite has no percentile function, and an exact percentile means sorting every duration of
the window; instead the stats queries count durations in fixed log-spaced buckets, in SQL, and
the percentile is read off the counts here. Bucket 0 holds durations under 1 ms; bucket ``k``
(1 ≤ k < :data:`OVERFLOW`) holds ``[2**((k-1)/8), 2**(k/8))`` ms, eight buckets per doubling up
to 2**17 ms (131 s, past the longest action deadline); :data:`OVERFLOW` holds the rest.

Accuracy: an estimate lies in the same bucket as the exact (nearest-rank) percentile, so it is
within one bucket's width of it: at most 9.05 % (``2**(1/8) - 1``) above or below for
durations of 1 ms and more, at most 1 ms off under 1 ms. Inside a bucket the estimate is
interpolated geometrically by rank, which is usually much closer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, literal

__all__ = [
    "BOUNDS",
    "OVERFLOW",
    "PER_DOUBLING",
    "RELATIVE_ERROR",
    "bucket_expression",
    "bucket_of",
    "merge",
    "percentile",
]

PER_DOUBLING = 8
"""Buckets per doubling of the duration."""
_DOUBLINGS = 17
BOUNDS: tuple[float, ...] = tuple(2 ** (k / PER_DOUBLING) for k in range(_DOUBLINGS * 8 + 1))
"""Lower bounds of buckets 1.. in ms: ``BOUNDS[k - 1]`` is where bucket ``k`` starts."""
OVERFLOW = len(BOUNDS)
"""The bucket of durations at or over ``BOUNDS[-1]`` (2**17 ms)."""
RELATIVE_ERROR = 2 ** (1 / PER_DOUBLING) - 1
"""The widest relative gap between an estimate and the exact percentile (at 1 ms and over)."""


def bucket_of(duration_ms: float) -> int:
    """The bucket of one duration, exactly as :func:`bucket_expression` computes it in SQL."""
    low, high = 0, len(BOUNDS)  # the number of bounds <= duration_ms
    while low < high:
        middle = (low + high) // 2
        if BOUNDS[middle] <= duration_ms:
            low = middle + 1
        else:
            high = middle
    return low


def bucket_expression(column: ColumnElement[Any]) -> ColumnElement[int]:
    """SQL for :func:`bucket_of` of ``column``: a binary search of nested CASEs.

    Comparisons only, so it runs the same on every SQLite build (no math functions needed)
    and on PostgreSQL; eight comparisons a row.
    """

    def search(low: int, high: int) -> ColumnElement[int]:
        # The number of bounds <= value lies in [low, high].
        if low == high:
            return literal(low)
        middle = (low + high) // 2
        return case(
            (column < BOUNDS[middle], search(low, middle)),
            else_=search(middle + 1, high),
        )

    return search(0, len(BOUNDS))


def _bucket_span(bucket: int) -> tuple[float, float]:
    if bucket == 0:
        return 0.0, 1.0
    if bucket >= OVERFLOW:
        return BOUNDS[-1], BOUNDS[-1]
    return BOUNDS[bucket - 1], BOUNDS[bucket]


def percentile(counts: Mapping[int, int], fraction: float) -> float | None:
    """The ``fraction`` percentile (0.5 for p50) of the durations counted per bucket.

    Args:
        counts: Durations per bucket (buckets as :func:`bucket_of` numbers them).
        fraction: Between 0 and 1.

    Returns:
        The estimate in ms (see the module docstring for its accuracy), or None without
        durations.
    """
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))  # nearest rank, 1-based
    seen = 0
    for bucket in sorted(counts):
        count = counts[bucket]
        if count <= 0:
            continue
        if seen + count >= rank:
            low, high = _bucket_span(bucket)
            # The rank's place among the bucket's durations, taken as spread evenly in log.
            share = (rank - seen - 0.5) / count
            if low <= 0.0:
                return low + (high - low) * share
            return float(low * (high / low) ** share)
        seen += count
    return None  # unreachable: the ranks add up to total


def merge(histograms: Sequence[Mapping[int, int]]) -> dict[int, int]:
    """The bucket counts of several histograms together."""
    merged: dict[int, int] = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            merged[bucket] = merged.get(bucket, 0) + count
    return merged
