"""Which function compiles which kind of sqlglot node: `handles(exp.Add, ...)` registers one. The compiler
(expressions.py) looks nodes up here; the handlers (operators.py, calls.py) take it as their first argument."""
from __future__ import annotations

from typing import Any, Callable

from ..expressions import Evaluator

Handler = Callable[[Any, Any], Evaluator]
HANDLERS: dict[type, Handler] = {}


def handles(*kinds: type) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for kind in kinds:
            HANDLERS[kind] = handler
        return handler
    return register
