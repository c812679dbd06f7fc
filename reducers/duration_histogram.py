"""A user-defined aggregate: the distribution of visit durations per language, in ten-second buckets.

The aggregate is registered from init / accumulate / merge plus a serializer (see chalicelib/aggregation/udaf.py);
its state is a list of 10 counts, stored as 10 little-endian int64s.
"""
import numpy as np
import pyarrow as pa

from chalicelib.aggregation import Serializer, register_aggregate
from chalicelib.jobs import Job
from reducers.tables import TABLES

USERVISITS = TABLES["uservisits"]

BUCKETS = 10


def _accumulate(state: np.ndarray, durations: pa.Array) -> np.ndarray:
    buckets = np.clip(durations.to_numpy(zero_copy_only=False) // 10, 0, BUCKETS - 1)
    return state + np.bincount(buckets.astype(np.int64), minlength=BUCKETS)


register_aggregate(
    "histogram10",
    init=lambda: np.zeros(BUCKETS, dtype=np.int64),
    accumulate=_accumulate,
    merge=lambda a, b: a + b,
    serializer=Serializer(dumps=lambda s: s.astype("<i8").tobytes(), loads=lambda b: np.frombuffer(b, "<i8")),
    finalize=lambda state: state.tolist(),
    result_type=pa.list_(pa.int64()),
)

JOB = Job(
    name="duration-histogram",
    description="Visits per ten-second bucket of duration (0-9 s, ..., 90 s and more), per language",
    prefix=USERVISITS.prefix,
    format=USERVISITS.format,
    keys={"languageCode": "languageCode"},
    aggregates={"visits": "count()", "duration_histogram": "histogram10(duration)"},
)
