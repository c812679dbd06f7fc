"""A small, safe expression language for job definitions, compiled to Arrow compute calls.

Jobs say `substr(sourceIP, 1, 8)` or `adRevenue > 0 and countryCode in ('USA', 'FRA')`. The text is parsed
with Python's own grammar (`ast`), so no new syntax to learn, but only the nodes below are accepted: column
names, literals, comparisons, boolean logic, arithmetic and a fixed list of functions. Nothing is ever
`eval`-ed. A compiled expression evaluates a whole Arrow batch at once, which is what keeps the map kernel
vectorized.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from .errors import JobDefinitionError

Value = Any  # a pyarrow Array, ChunkedArray or Scalar, or a Python literal
Batch = pa.RecordBatch | pa.Table
Evaluator = Callable[[Batch], Value]


def _substr(text: Value, start: int, length: int | None = None) -> Value:
    # SQL semantics: 1-based start, optional length (the Big Data Benchmark's SUBSTR(sourceIP, 1, 8)).
    if not isinstance(start, int) or start < 1:
        raise JobDefinitionError("substr(text, start, length): start is a literal integer >= 1")
    if length is not None and (not isinstance(length, int) or length < 0):
        raise JobDefinitionError("substr(text, start, length): length is a literal integer >= 0")
    stop = None if length is None else start - 1 + length
    return pc.utf8_slice_codeunits(text, start - 1, stop)


def _date_trunc(unit: str, value: Value) -> Value:
    if unit not in {"year", "quarter", "month", "week", "day", "hour", "minute", "second"}:
        raise JobDefinitionError(f"date_trunc: unknown unit {unit!r}")
    return pc.floor_temporal(value, unit=unit)


_FUNCTIONS: dict[str, Callable[..., Value]] = {
    "substr": _substr,
    "lower": pc.utf8_lower,
    "upper": pc.utf8_upper,
    "trim": pc.utf8_trim_whitespace,
    "length": pc.utf8_length,
    "startswith": lambda text, prefix: pc.starts_with(text, pattern=prefix),
    "endswith": lambda text, suffix: pc.ends_with(text, pattern=suffix),
    "contains": lambda text, part: pc.match_substring(text, pattern=part),
    "abs": pc.abs,
    "round": lambda value, digits=0: pc.round(value, ndigits=digits),
    "coalesce": pc.coalesce,
    "year": pc.year,
    "month": pc.month,
    "day": pc.day,
    "hour": pc.hour,
    "date_trunc": _date_trunc,
}
# Arguments that must be literals (Arrow takes them as options, not as columns).
_LITERAL_ARGS = {"substr": {1, 2}, "startswith": {1}, "endswith": {1}, "contains": {1}, "round": {1},
                 "date_trunc": {0}}

_COMPARE = {ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
            ast.Gt: pc.greater, ast.GtE: pc.greater_equal}
def _true_divide(left: Value, right: Value) -> Value:
    # SQL engines (and Python) divide integers into a fraction; Arrow would truncate.
    def as_float(value: Value) -> Value:
        kind = value.type if hasattr(value, "type") else pa.scalar(value).type
        return pc.cast(value, pa.float64()) if pa.types.is_integer(kind) else value

    return pc.divide(as_float(left), as_float(right))


_ARITHMETIC = {ast.Add: pc.add_checked, ast.Sub: pc.subtract_checked, ast.Mult: pc.multiply_checked,
               ast.Div: _true_divide}


@dataclass(frozen=True)
class Expression:
    source: str
    columns: frozenset[str]
    _evaluate: Evaluator = field(repr=False, compare=False)

    def evaluate(self, batch: Batch) -> Value:
        return self._evaluate(batch)

    def evaluate_array(self, batch: Batch) -> pa.Array | pa.ChunkedArray:
        """Like evaluate, but a literal or scalar result is broadcast to the batch's length."""
        value = self._evaluate(batch)
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            return value
        scalar = value if isinstance(value, pa.Scalar) else pa.scalar(value)
        return pa.repeat(scalar, batch.num_rows)


def compile_expression(source: str, columns: Iterable[str]) -> Expression:
    known = set(columns)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise JobDefinitionError(f"cannot parse expression {source!r}: {exc.msg}") from exc
    used: set[str] = set()
    evaluate = _Compiler(source, known, used).visit(tree.body)
    return Expression(source, frozenset(used), evaluate)


class _Compiler:
    def __init__(self, source: str, columns: set[str], used: set[str]):
        self.source, self.columns, self.used = source, columns, used

    def fail(self, what: str) -> JobDefinitionError:
        return JobDefinitionError(f"in expression {self.source!r}: {what}")

    def visit(self, node: ast.AST) -> Evaluator:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.fail(f"{type(node).__name__} is not supported")
        return method(node)

    def literal(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -node.operand.value
        raise self.fail(f"expected a literal, got {ast.unparse(node)!r}")

    def visit_Constant(self, node: ast.Constant) -> Evaluator:
        value = node.value
        return lambda batch: value

    def visit_Name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name not in self.columns:
            raise self.fail(f"unknown column {name!r} (columns: {', '.join(sorted(self.columns))})")
        self.used.add(name)
        return lambda batch: batch.column(name)

    def visit_BoolOp(self, node: ast.BoolOp) -> Evaluator:
        combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
        parts = [self.visit(value) for value in node.values]

        def evaluate(batch: Batch) -> Value:
            result = parts[0](batch)
            for part in parts[1:]:
                result = combine(result, part(batch))
            return result

        return evaluate

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Evaluator:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda batch: pc.invert(operand(batch))
        if isinstance(node.op, ast.USub):
            return lambda batch: pc.negate_checked(operand(batch))
        raise self.fail(f"operator {type(node.op).__name__} is not supported")

    def visit_BinOp(self, node: ast.BinOp) -> Evaluator:
        function = _ARITHMETIC.get(type(node.op))
        if function is None:
            raise self.fail(f"operator {type(node.op).__name__} is not supported")
        left, right = self.visit(node.left), self.visit(node.right)
        return lambda batch: function(left(batch), right(batch))

    def visit_Compare(self, node: ast.Compare) -> Evaluator:
        # `a < b < c` is `a < b and b < c`; the right side of `in` is a literal list, never an operand.
        operands = [node.left, *node.comparators]
        tests = [
            self.comparison(self.visit(left), op, right)
            for left, op, right in zip(operands, node.ops, node.comparators)
        ]

        def evaluate(batch: Batch) -> Value:
            result = tests[0](batch)
            for test in tests[1:]:
                result = pc.and_kleene(result, test(batch))
            return result

        return evaluate

    def comparison(self, left: Evaluator, op: ast.cmpop, right_node: ast.AST) -> Evaluator:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                raise self.fail("`in` takes a literal tuple or list, e.g. x in ('a', 'b')")
            options = pc.SetLookupOptions(pa.array([self.literal(e) for e in right_node.elts]))
            negate = isinstance(op, ast.NotIn)

            def member(batch: Batch) -> Value:
                value = left(batch)
                found = pc.is_in(value, options=options)
                found = pc.invert(found) if negate else found
                # SQL: NULL IN (...) is NULL, so `not in` does not keep rows whose value is missing.
                return pc.if_else(pc.is_null(value), pa.scalar(None, pa.bool_()), found)

            return member
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                raise self.fail("`is` only compares with None")
            test = pc.is_null if isinstance(op, ast.Is) else pc.is_valid
            return lambda batch: test(left(batch))
        function = _COMPARE.get(type(op))
        if function is None:
            raise self.fail(f"comparison {type(op).__name__} is not supported")
        right = self.visit(right_node)
        return lambda batch: function(left(batch), right(batch))

    def visit_Call(self, node: ast.Call) -> Evaluator:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = ast.unparse(node.func)
            raise self.fail(f"unknown function {name!r} (functions: {', '.join(sorted(_FUNCTIONS))})")
        if node.keywords:
            raise self.fail("functions take positional arguments only")
        name = node.func.id
        function = _FUNCTIONS[name]
        literal_positions = _LITERAL_ARGS.get(name, set())
        args: list[tuple[bool, Any]] = []
        for position, arg in enumerate(node.args):
            if position in literal_positions:
                args.append((True, self.literal(arg)))
            else:
                args.append((False, self.visit(arg)))

        def evaluate(batch: Batch) -> Value:
            return function(*[value if is_literal else value(batch) for is_literal, value in args])

        return evaluate
