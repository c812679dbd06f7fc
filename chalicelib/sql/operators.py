"""Handlers of SQL's operators and leaves: columns, literals, arithmetic, comparisons, boolean logic, IS, IN,
BETWEEN, LIKE, CASE, COALESCE, NULLIF and CAST. Each takes the compiler and the node and returns an evaluator."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..expressions import Batch, Evaluator, Value
from .functions import like_pattern
from .registry import handles
from .types import CAST_NAMES, cast, cast_type, is_literal, number, type_of

_NULL_BOOL = pa.scalar(None, pa.bool_())


def _constant(value: Value) -> Evaluator:
    return lambda batch: value


# -- leaves ----------------------------------------------------------------------------------------------

@handles(exp.Column)
def _column(c, node: exp.Column) -> Evaluator:
    if node.table:
        raise c.source.error(f"qualified column {node.sql()!r}: a job reads one table, name its columns alone",
                             node)
    name = c.resolve(node.name, node)
    c.used.add(name)
    return lambda batch: batch.column(name)


@handles(exp.Literal)
def _literal(c, node: exp.Literal) -> Evaluator:
    return _constant(pa.scalar(node.this, pa.string()) if node.is_string else number(node.this))


@handles(exp.Boolean)
def _boolean(c, node: exp.Boolean) -> Evaluator:
    return _constant(pa.scalar(bool(node.this), pa.bool_()))


@handles(exp.Null)
def _null(c, node: exp.Null) -> Evaluator:
    return _constant(pa.scalar(None, pa.null()))


@handles(exp.Paren)
def _paren(c, node: exp.Paren) -> Evaluator:
    return c.compile(node.this)


# -- arithmetic ------------------------------------------------------------------------------------------

def _as_float(value: Value) -> Value:
    return value if pa.types.is_floating(type_of(value)) else pc.cast(value, pa.float64())


def _integer_division(left: Value, right: Value) -> Value:
    if pa.types.is_floating(type_of(left)) or pa.types.is_floating(type_of(right)):
        return pc.trunc(pc.divide(_as_float(left), _as_float(right)))
    return pc.divide_checked(left, right)  # truncates towards zero; by zero it fails, as in DuckDB


def _remainder(left: Value, right: Value) -> Value:
    if any(pa.types.is_decimal(type_of(v)) for v in (left, right)):
        raise TypeError("% takes integers or floats")
    if pa.types.is_floating(type_of(left)) or pa.types.is_floating(type_of(right)):
        left, right = _as_float(left), _as_float(right)
        return pc.subtract(left, pc.multiply(pc.trunc(pc.divide(left, right)), right))  # x % 0 is NaN
    return pc.subtract_checked(left, pc.multiply_checked(pc.divide_checked(left, right), right))


_ARITHMETIC = {exp.Add: pc.add_checked, exp.Sub: pc.subtract_checked, exp.Mul: pc.multiply_checked,
               # `/` always gives a DOUBLE in DuckDB, for integers and decimals alike; x / 0 is ±inf or NaN.
               exp.Div: lambda left, right: pc.divide(_as_float(left), _as_float(right)),
               exp.IntDiv: _integer_division, exp.Mod: _remainder}


@handles(*_ARITHMETIC)
def _arithmetic(c, node: exp.Binary) -> Evaluator:
    function = _ARITHMETIC[type(node)]
    left, right = c.operands(node.this, node.expression)
    return lambda batch: function(left(batch), right(batch))


@handles(exp.Neg)
def _negate(c, node: exp.Neg) -> Evaluator:
    operand = c.compile(node.this)
    return lambda batch: pc.negate_checked(operand(batch))


# -- comparisons and logic -------------------------------------------------------------------------------

def _nan_ordered(compare, when_nan):
    """A float comparison in SQL's order, where NaN equals NaN and is above every other number (DuckDB,
    PostgreSQL), not IEEE's, where every comparison with NaN is false. `when_nan(a_nan, b_nan)` decides the
    comparisons that meet a NaN."""
    def function(left: Value, right: Value) -> Value:
        if not (pa.types.is_floating(type_of(left)) or pa.types.is_floating(type_of(right))):
            return compare(left, right)
        left_nan, right_nan = (pc.is_nan(pc.cast(v, pa.float64())) for v in (left, right))
        return pc.if_else(pc.or_(left_nan, right_nan), when_nan(left_nan, right_nan), compare(left, right))
    return function


equal = _nan_ordered(pc.equal, pc.and_)
less = _nan_ordered(pc.less, lambda a, b: pc.and_(pc.invert(a), b))
less_equal = _nan_ordered(pc.less_equal, lambda a, b: b)
_COMPARE = {exp.EQ: equal, exp.NEQ: lambda a, b: pc.invert(equal(a, b)), exp.LT: less, exp.LTE: less_equal,
            exp.GT: lambda a, b: less(b, a), exp.GTE: lambda a, b: less_equal(b, a)}


@handles(*_COMPARE)
def _compare(c, node: exp.Binary) -> Evaluator:
    if isinstance(node.expression, (exp.Any, exp.All)):
        raise c.refuse(node.expression)
    function = _COMPARE[type(node)]
    left, right = c.operands(node.this, node.expression)
    return lambda batch: function(left(batch), right(batch))


def _distinct(left: Value, right: Value) -> Value:
    """IS DISTINCT FROM: never NULL; two NULLs are not distinct."""
    left_null, right_null = pc.is_null(left), pc.is_null(right)
    differ = pc.fill_null(pc.invert(equal(left, right)), False)
    return pc.if_else(pc.or_(left_null, right_null), pc.xor(left_null, right_null), differ)


@handles(exp.NullSafeNEQ, exp.NullSafeEQ)
def _null_safe(c, node: exp.Binary) -> Evaluator:
    left, right = c.operands(node.this, node.expression)
    if isinstance(node, exp.NullSafeNEQ):
        return lambda batch: _distinct(left(batch), right(batch))
    return lambda batch: pc.invert(_distinct(left(batch), right(batch)))


def _boolean_operand(c, node: exp.Expression) -> Evaluator:
    evaluate = c.compile(node)
    kind = c.type(evaluate, node)
    if pa.types.is_null(kind):
        return lambda batch: _NULL_BOOL
    if not pa.types.is_boolean(kind):
        raise c.source.error(f"{c.source.snippet(node)} is {kind}, not a condition", node)
    return evaluate


@handles(exp.And, exp.Or)
def _logic(c, node: exp.Binary) -> Evaluator:
    combine = pc.and_kleene if isinstance(node, exp.And) else pc.or_kleene
    left, right = _boolean_operand(c, node.this), _boolean_operand(c, node.expression)
    return lambda batch: combine(left(batch), right(batch))


@handles(exp.Not)
def _not(c, node: exp.Not) -> Evaluator:
    operand = _boolean_operand(c, node.this)
    return lambda batch: pc.invert(operand(batch))


@handles(exp.Is)
def _is(c, node: exp.Is) -> Evaluator:
    operand = c.compile(node.this)
    if isinstance(node.expression, exp.Null):
        return lambda batch: pc.is_null(operand(batch))
    if isinstance(node.expression, exp.Boolean):
        wanted = bool(node.expression.this)
        return lambda batch: pc.fill_null(pc.equal(operand(batch), wanted), False)
    raise c.source.error(f"IS takes NULL, TRUE or FALSE, not {c.source.snippet(node.expression)}", node.expression)


@handles(exp.In)
def _in(c, node: exp.In) -> Evaluator:
    if node.args.get("query") is not None or node.args.get("unnest") is not None:
        raise c.refuse(node.args.get("query") or node.args["unnest"])
    items = node.expressions
    compiled = c.operands(node.this, *items)
    kind = c.type(compiled[0], node.this)
    options = [c.value(item, node) for item in compiled[1:]] if all(map(is_literal_node, items)) else None
    if options is None or any(o.is_valid and not o.type.equals(kind) for o in options):
        # x IN (a, b) is x = a OR x = b, NULLs and all; comparisons widen operands of other types.
        tests = [c.operands(node.this, item) for item in items]

        def any_equal(batch: Batch) -> Value:
            result = equal(tests[0][0](batch), tests[0][1](batch))
            for left, right in tests[1:]:
                result = pc.or_kleene(result, equal(left(batch), right(batch)))
            return result
        return any_equal
    value = compiled[0]
    listed = [o.as_py() for o in options if o.is_valid]
    lookup = pc.SetLookupOptions(pa.array(listed, kind), skip_nulls=True)
    has_null = len(listed) < len(options)

    def member(batch: Batch) -> Value:
        values = value(batch)
        found = pc.is_in(values, options=lookup)
        # SQL: NULL IN (...) is NULL, and so is x IN (..., NULL) when x is not listed.
        unknown = pc.is_null(values)
        if has_null:
            unknown = pc.or_(unknown, pc.invert(found))
        return pc.if_else(unknown, _NULL_BOOL, found)

    return member


def is_literal_node(node: exp.Expression) -> bool:
    return is_literal(node) or (isinstance(node, exp.Neg) and is_literal(node.this))


@handles(exp.Between)
def _between(c, node: exp.Between) -> Evaluator:
    value, low, high = c.operands(node.this, node.args["low"], node.args["high"])
    def evaluate(batch: Batch) -> Value:
        values = value(batch)
        return pc.and_kleene(less_equal(low(batch), values), less_equal(values, high(batch)))

    return evaluate


@handles(exp.Like, exp.ILike, exp.Escape)
def _like(c, node: exp.Expression) -> Evaluator:
    escape = None
    if isinstance(node, exp.Escape):
        escape = c.literal(node.expression, "LIKE's ESCAPE")
        node = node.this
        if not isinstance(node, (exp.Like, exp.ILike)):
            raise c.refuse(node)
    text = c.compile(node.this)
    if not pa.types.is_string(c.type(text, node.this)):
        raise c.source.error(f"LIKE needs text, not {c.type(text, node.this)}", node.this)
    pattern = like_pattern(c.literal(node.expression, "a LIKE pattern"), escape)
    ignore_case, negate = isinstance(node, exp.ILike), bool(node.args.get("negate"))

    def match(batch: Batch) -> Value:
        found = pc.match_substring_regex(text(batch), pattern=pattern, ignore_case=ignore_case)
        return pc.invert(found) if negate else found

    return match


# -- conditional values ----------------------------------------------------------------------------------

def _equals(c, left_node: exp.Expression, right_node: exp.Expression) -> Evaluator:
    left, right = c.operands(left_node, right_node)
    return lambda batch: equal(left(batch), right(batch))


def _choose(c, conditions: list[Evaluator], values: list[exp.Expression], default: exp.Expression | None):
    """CASE: the value of the first condition that holds (a NULL condition does not), else the default."""
    branches = c.operands(*values, default if default is not None else exp.Null())

    def evaluate(batch: Batch) -> Value:
        result = branches[-1](batch)
        for condition, branch in zip(reversed(conditions), reversed(branches[:-1])):
            result = pc.if_else(pc.fill_null(condition(batch), False), branch(batch), result)
        return result

    return evaluate


@handles(exp.Case)
def _case(c, node: exp.Case) -> Evaluator:
    ifs = node.args.get("ifs") or []
    if node.this is not None:  # CASE x WHEN v THEN ...: x = v
        conditions = [_equals(c, node.this, branch.this) for branch in ifs]
    else:
        conditions = [_boolean_operand(c, branch.this) for branch in ifs]
    return _choose(c, conditions, [branch.args["true"] for branch in ifs], node.args.get("default"))


@handles(exp.If)
def _if(c, node: exp.If) -> Evaluator:
    return _choose(c, [_boolean_operand(c, node.this)], [node.args["true"]], node.args.get("false"))


@handles(exp.Coalesce)
def _coalesce(c, node: exp.Coalesce) -> Evaluator:
    values = c.operands(node.this, *node.expressions)
    return lambda batch: pc.coalesce(*(value(batch) for value in values))


@handles(exp.Nullif)
def _nullif(c, node: exp.Nullif) -> Evaluator:
    value, other = c.operands(node.this, node.expression)

    def evaluate(batch: Batch) -> Value:
        kept = value(batch)
        return pc.if_else(pc.fill_null(equal(kept, other(batch)), False), pa.scalar(None, type_of(kept)), kept)

    return evaluate


@handles(exp.Cast)
def _cast(c, node: exp.Cast) -> Evaluator:
    target = cast_type(node.args["to"])
    if target is None:
        raise c.source.error(f"CAST to {node.args['to'].sql(dialect='duckdb')} is not supported (types: "
                             f"{CAST_NAMES})", node.args["to"] if node.args["to"].meta else node)
    operand = c.compile(node.this)
    return lambda batch: cast(operand(batch), target)


@handles(exp.DPipe)
def _concatenate(c, node: exp.DPipe) -> Evaluator:
    """a || b: NULL if either is (concat() skips NULLs instead)."""
    left, right = (c.compile(side) for side in (node.this, node.expression))
    return lambda batch: pc.binary_join_element_wise(as_text(left(batch)), as_text(right(batch)), "",
                                                     null_handling="emit_null")


def as_text(value: Value) -> Value:
    kind = type_of(value)
    return value if pa.types.is_string(kind) else cast(value, pa.string())
