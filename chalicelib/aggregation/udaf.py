"""User-defined aggregates: three functions and a serializer make a mergeable aggregate.

```python
from chalicelib.aggregation.udaf import Serializer, register_aggregate

register_aggregate(
    "histogram10",                                   # the name jobs call: histogram10(duration)
    init=lambda: [0] * 10,                           # the state of no values
    accumulate=lambda state, values: ...,            # state + a batch of a group's non-null values (pa.Array)
    merge=lambda a, b: [x + y for x, y in zip(a, b)],
    serializer=Serializer(dumps=..., loads=...),     # state <-> bytes, stored in partials
    finalize=lambda state: state,                    # state -> the served value (JSON-able), of result_type
    result_type=pa.list_(pa.int64()),
)
```

`merge` must be associative and commutative with `init()` as identity, and accumulating a batch in pieces must
equal accumulating it whole: tests/test_udaf.py checks a registered aggregate with the same laws as the
built-ins (`check_monoid_laws`). Inputs are never retracted by negation: deleting or overwriting an object
rebuilds from the retained partials. Each group costs Python calls, so this is a slower path than the
built-in aggregates. Register at import time of the job's module, before `JOB`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import reduce
from types import CodeType
from typing import Any, Callable

import pyarrow as pa

from ..errors import JobDefinitionError
from .grouped import GroupedAggregate


@dataclass(frozen=True)
class Serializer:
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


@dataclass(frozen=True)
class UserAggregate(GroupedAggregate):
    init: Callable[[], Any] = field(default=None, compare=False)
    accumulate: Callable[[Any, pa.Array], Any] = field(default=None, compare=False)
    combine: Callable[[Any, Any], Any] = field(default=None, compare=False)
    serializer: Serializer = field(default=None, compare=False)
    final: Callable[[Any], Any] = field(default=None, compare=False)
    output_type: pa.DataType = field(default=None, compare=False)
    code: str = ""

    def check_input(self, value_type):
        if value_type is None:
            raise JobDefinitionError(f"{self.name}() takes an expression")

    def lift_values(self, values):
        return self.serializer.dumps(self.accumulate(self.init(), values))

    def merge_states(self, states):
        return self.serializer.dumps(reduce(self.combine, map(self.serializer.loads, states)))

    @property
    def result_type(self):
        return self.output_type

    def finalize_state(self, state):
        return self.final(self.init() if state is None else self.serializer.loads(state))

    @property
    def identity(self):
        # Changing a function's code changes what its states mean: partials of the old code must not merge.
        return self.code


_REGISTRY: dict[str, UserAggregate] = {}


def register_aggregate(name: str, *, init: Callable[[], Any], accumulate: Callable[[Any, pa.Array], Any],
                       merge: Callable[[Any, Any], Any], serializer: Serializer,
                       finalize: Callable[[Any], Any] = lambda state: state,
                       result_type: pa.DataType = pa.binary()) -> UserAggregate:
    """Make `name(expression)` available to jobs. Registering the same name again with the same code is a
    no-op (job modules may be imported twice); with other code it is an error."""
    from .catalog import BUILT_IN  # the catalog imports this module

    if not name.isidentifier() or name.lower() != name:
        raise JobDefinitionError(f"aggregate names are lower-case identifiers, not {name!r}")
    if name in BUILT_IN:
        raise JobDefinitionError(f"{name!r} is a built-in aggregate")
    functions = (init, accumulate, merge, serializer.dumps, serializer.loads, finalize)
    aggregate = UserAggregate(name, init=init, accumulate=accumulate, combine=merge, serializer=serializer,
                              final=finalize, output_type=result_type, code=_code_digest(functions))
    existing = _REGISTRY.get(name)
    if existing is not None and existing.code != aggregate.code:
        raise JobDefinitionError(f"another aggregate is already registered as {name!r}")
    _REGISTRY[name] = aggregate
    return aggregate


def registered(name: str | None = None):
    """The user aggregate called `name` (None if there is none), or every registered name."""
    return _REGISTRY.get(name) if name is not None else list(_REGISTRY)


def _code_digest(functions) -> str:
    digest = hashlib.sha256()
    for function in functions:
        digest.update(code_identity(function))
    return digest.hexdigest()[:16]


def code_identity(function: Callable) -> bytes:
    """Bytes that change when a function's code changes and stay the same across processes (no addresses,
    no hash-seed-dependent orders)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return repr(getattr(function, "__qualname__", type(function).__qualname__)).encode()
    return _code_bytes(code)


def _code_bytes(code: CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            parts.append(_code_bytes(constant))
        elif isinstance(constant, frozenset):
            parts.append(repr(sorted(map(repr, constant))).encode())
        else:
            parts.append(repr(constant).encode())
    return b"\0".join(parts)
