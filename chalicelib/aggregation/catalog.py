"""Every aggregate a job can name, and the parser of `name(expression, parameters...)`."""
from __future__ import annotations

import ast
from typing import Iterable

from ..errors import JobDefinitionError
from ..expressions import compile_expression
from .functions import COUNT_ROWS, FUNCTIONS, AggregateFunction, AggregateSpec
from .moments import MOMENTS
from .sketches import SKETCHES
from .udaf import registered

BUILT_IN: dict[str, AggregateFunction] = {**FUNCTIONS, **MOMENTS, **SKETCHES}


def lookup(name: str) -> AggregateFunction | None:
    return BUILT_IN.get(name) or registered(name)


def parse_aggregate(out: str, source: str, columns: Iterable[str]) -> AggregateSpec:
    """Parse `sum(adRevenue)`, `count()`, `mean(duration * 2)`, `approx_quantile(duration, 0.95)`: one
    expression over the columns, then literal parameters."""
    columns = list(columns)
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise JobDefinitionError(f"aggregate {out!r}: cannot parse {source!r}: {exc.msg}") from exc
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords):
        raise JobDefinitionError(f"aggregate {out!r}: expected function(expression), got {source!r}")
    name = node.func.id.lower()
    function = lookup(name)
    if function is None:
        known = sorted({*BUILT_IN, *registered()})
        raise JobDefinitionError(f"aggregate {out!r}: unknown aggregate {name!r} (known: {', '.join(known)})")
    if name == "count" and not node.args:
        return AggregateSpec(out, source, COUNT_ROWS, None)
    if not node.args:
        raise JobDefinitionError(f"aggregate {out!r}: {name}() takes an expression")
    try:
        function = function.with_parameters(tuple(_literal(argument) for argument in node.args[1:]))
    except JobDefinitionError as exc:
        raise JobDefinitionError(f"aggregate {out!r}: {exc}") from exc
    argument = compile_expression(ast.unparse(node.args[0]), columns)
    return AggregateSpec(out, source, function, argument)


class _Expression(str):
    """A parameter that is not a literal: every parameter check refuses it, naming it."""

    def __repr__(self) -> str:
        return f"the expression {str(self)!r}"


def _literal(argument: ast.expr):
    try:
        return ast.literal_eval(argument)
    except ValueError:
        return _Expression(ast.unparse(argument))
