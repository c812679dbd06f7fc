"""SQL aggregate calls to the project's aggregates (chalicelib/aggregation): each is one function of one
argument expression, with literal parameters.

| SQL | aggregate |
|---|---|
| count(*), count(x), sum, avg / mean, min, max | exact |
| stddev / stddev_samp, stddev_pop, variance / var_samp, var_pop | exact moments (moments.py) |
| approx_count_distinct(x), count(DISTINCT x) | HLL sketch, lg_k 12 (sketches.py) |
| approx_quantile(x, q), percentile_cont(q) / percentile_disc(q) WITHIN GROUP (ORDER BY x [DESC]) | KLL sketch, k 200 |
| top_k(x, k[, lg_max_k]) | frequent-items sketch (Tally's, not DuckDB's) |
| a registered user aggregate, name(x, parameters...) | udaf.py |

`agg(x) FILTER (WHERE c)` aggregates x only where c holds: the argument is NULL elsewhere, which every aggregate
skips (count(*) FILTER counts the rows where c holds).
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..aggregation.catalog import lookup
from ..aggregation.functions import COUNT_ROWS, AggregateSpec
from ..errors import JobDefinitionError
from ..expressions import Batch, Expression, Value
from .expressions import Compiler
from .source import parse_expression

_BUILT_IN = {exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Stddev: "stddev_samp",
             exp.StddevSamp: "stddev_samp", exp.StddevPop: "stddev_pop", exp.Variance: "var_samp",
             exp.VariancePop: "var_pop", exp.ApproxDistinct: "approx_distinct"}
_ONE = pa.scalar(1, pa.int64())


def parse_sql_aggregate(out: str, source: str, schema: pa.Schema) -> AggregateSpec:
    """`count(*)`, `sum(adRevenue) FILTER (WHERE duration > 10)`, `count(DISTINCT sourceIP)`: one aggregate as a
    job's `aggregates` hold it."""
    text, tree = parse_expression(source)
    return aggregate(Compiler(text, schema), out, tree, source.strip())


def is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.Filter):
        node = node.this
    if isinstance(node, (exp.AggFunc, exp.WithinGroup)):
        return True
    return isinstance(node, exp.Anonymous) and lookup(node.name.lower()) is not None


def aggregate(c: Compiler, out: str, node: exp.Expression, text: str) -> AggregateSpec:
    """The aggregate `node` (a whole SELECT item) named `out`, its source `text`; type-checked here, so an error
    has the aggregate's position."""
    condition = None
    if isinstance(node, exp.Filter):
        condition = c.condition(node.expression.this, node.expression.this.sql(dialect="duckdb"), "FILTER")
        node = node.this
    function, argument_node, parameters = _function(c, node)
    argument = c.expression(argument_node, argument_node.sql(dialect="duckdb")) if argument_node else None
    if condition is not None:
        if argument is None:  # count(*) FILTER (WHERE c): count the rows where c holds
            function, argument = lookup("count"), Expression("1", frozenset(), lambda batch: _ONE)
        argument = _masked(argument, condition)
    try:
        function = function.with_parameters(tuple(parameters))
        value_type = c.type(argument.evaluate_array, node) if argument else None
        function.for_values(value_type).state_types(value_type)
    except JobDefinitionError as exc:
        raise c.source.error(f"aggregate {out!r}: {exc}", node) from None
    return AggregateSpec(out, text, function, argument)


def _function(c: Compiler, node: exp.Expression):
    """(aggregate function, argument node or None for count(*), literal parameters)."""
    if isinstance(node, exp.Count):
        return _count(c, node)
    if isinstance(node, exp.WithinGroup):
        return _percentile(c, node)
    if type(node) in _BUILT_IN:
        if isinstance(node.this, exp.Distinct):
            raise c.source.error(f"{c.function_name(node)}(DISTINCT ...) is not supported (only count(DISTINCT x))",
                                 node)
        extra = [value for key, value in node.args.items() if key != "this" and value not in (None, False)]
        if extra:
            raise c.source.error(f"{c.function_name(node)}() takes one argument", node)
        return lookup(_BUILT_IN[type(node)]), node.this, []
    if isinstance(node, exp.ApproxQuantile):
        if node.args.get("accuracy") or node.args.get("weight"):
            raise c.source.error("approx_quantile(x, q) takes one quantile q", node)
        return lookup("approx_quantile"), node.this, [_number(c, node.args["quantile"], "the quantile q")]
    if isinstance(node, exp.Anonymous) and lookup(node.name.lower()) is not None and node.expressions:
        name = node.name.lower()
        parameters = [c.literal(p, f"{name}'s parameter") for p in node.expressions[1:]]
        return lookup(name), node.expressions[0], parameters
    if isinstance(node, exp.AggFunc):
        raise c.source.error(f"the aggregate {c.function_name(node)}() is not supported (aggregates: count, sum, "
                             "avg, min, max, stddev, stddev_samp, stddev_pop, variance, var_samp, var_pop, "
                             "approx_count_distinct, approx_quantile, percentile_cont, percentile_disc, top_k)", node)
    raise c.source.error(f"{c.source.snippet(node)} is not an aggregate", node)


def _count(c: Compiler, node: exp.Count):
    if node.expressions:
        raise c.source.error("count() takes one argument", node)
    argument = node.this
    if argument is None or isinstance(argument, exp.Star):
        return COUNT_ROWS, None, []
    if isinstance(argument, exp.Distinct):
        if len(argument.expressions) != 1 or argument.args.get("on") is not None:
            raise c.source.error("count(DISTINCT x) takes one expression", node)
        # Approximate, as streaming engines count distinct values: an HLL sketch (README: the error bound).
        return lookup("approx_distinct"), argument.expressions[0], []
    return lookup("count"), argument, []


def _percentile(c: Compiler, node: exp.WithinGroup):
    """percentile_cont(q) / percentile_disc(q) WITHIN GROUP (ORDER BY x): the KLL sketch's quantile q."""
    function = node.this
    order = node.expression
    if not isinstance(function, (exp.PercentileCont, exp.PercentileDisc)) or function.expression is not None:
        raise c.source.error(f"{c.source.snippet(node)}: WITHIN GROUP takes percentile_cont(q) or "
                             "percentile_disc(q)", node)
    if not isinstance(order, exp.Order) or len(order.expressions) != 1:
        raise c.source.error("WITHIN GROUP takes (ORDER BY x) with one expression", node)
    ordered = order.expressions[0]
    q = _number(c, function.this, "the percentile q")
    return lookup("approx_quantile"), ordered.this, [1 - q if ordered.args.get("desc") else q]


def _number(c: Compiler, node: exp.Expression, what: str) -> float:
    value = c.literal(node, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "as_integer_ratio"):
        raise c.source.error(f"{what} is a number from 0 to 1", node)
    return float(value)


def _masked(argument: Expression, condition: Expression) -> Expression:
    """The argument where the condition holds, NULL elsewhere (a NULL condition does not hold)."""
    def evaluate(batch: Batch) -> Value:
        values = argument.evaluate_array(batch)
        kept = pc.fill_null(condition.evaluate_array(batch), False)
        return pc.if_else(kept, values, pa.scalar(None, values.type))

    return Expression(f"{argument.source} FILTER (WHERE {condition.source})",
                      argument.columns | condition.columns, evaluate)
