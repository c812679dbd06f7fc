"""SQL expressions (sqlglot's tree) compiled to the `Expression` objects `chalicelib.expressions` makes from
Python syntax: a function of an Arrow batch, the columns it reads and its source text. Every node is
type-checked against the input schema as it is compiled (evaluated over an empty batch), so an error names the
construct with its line and column at load time, never in a running mapper.

Semantics are DuckDB's: three-valued logic (a NULL operand makes a comparison NULL, AND/OR are Kleene's, a
WHERE or CASE condition that is NULL does not hold), `/` divides into a DOUBLE, `//` and `%` truncate towards
zero, numeric literals with a point are exact DECIMALs, and a text literal compared with a typed value takes
that value's type.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import TokenType

from ..errors import JobDefinitionError
from ..expressions import Evaluator, Expression, Value
from . import calls, operators  # noqa: F401  (their handlers register themselves)
from ..aggregation.catalog import lookup
from .calls import SCALAR_FUNCTIONS
from .registry import HANDLERS
from .source import Source, parse_expression
from .types import cast, coerce, is_literal, type_of


def compile_sql_expression(source: str, schema: pa.Schema) -> Expression:
    """One SQL expression over the columns of `schema`, as a job's keys, filter and select hold them."""
    text, tree = parse_expression(source)
    return Compiler(text, schema).expression(tree, source.strip())


class Compiler:
    """Compiles nodes of one SQL text over the columns of `schema`; `used` collects the columns read."""

    def __init__(self, source: Source, schema: pa.Schema):
        self.source, self.schema = source, schema
        self.empty = schema.empty_table()
        self.used: set[str] = set()

    def expression(self, node: exp.Expression, text: str) -> Expression:
        """The node as an Expression whose source is `text`."""
        outer, self.used = self.used, set()
        try:
            evaluate = self.compile(node)
            return Expression(text, frozenset(self.used), evaluate)
        finally:
            self.used = outer | self.used

    def condition(self, node: exp.Expression, text: str, what: str) -> Expression:
        compiled = self.expression(node, text)
        kind = self.type(compiled.evaluate, node)
        if not (pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            raise self.source.error(f"{what} {self.source.snippet(node)} is {kind}, not a condition", node)
        return compiled

    def compile(self, node: exp.Expression) -> Evaluator:
        handler = HANDLERS.get(type(node))
        if handler is None:
            raise self.refuse(node)
        evaluate = handler(self, node)
        self.value(evaluate, node)  # type-check this node now, where its position is known
        return evaluate

    def value(self, evaluate: Evaluator, node: exp.Expression) -> Value:
        """What `evaluate` gives over no rows: its type, or the error that names the node."""
        try:
            return evaluate(self.empty)
        except JobDefinitionError as exc:
            if " at line " in str(exc):  # an inner node's error, which already says where
                raise
            raise self.source.error(f"{exc}, in {self.source.snippet(node)}", node) from None
        except (pa.ArrowException, TypeError, ValueError, ArithmeticError) as exc:
            raise self.source.error(f"cannot compute {self.source.snippet(node)}: {exc}", node) from None

    def type(self, evaluate: Evaluator, node: exp.Expression) -> pa.DataType:
        return type_of(self.value(evaluate, node))

    def refuse(self, node: exp.Expression) -> JobDefinitionError:
        if isinstance(node, exp.Window):
            return self.source.error(f"window functions (OVER) are not supported: {self.source.snippet(node)}", node)
        if isinstance(node, (exp.Subquery, exp.Select, exp.Exists, exp.Any, exp.All, exp.Union)):
            offset = self.source.keyword_before(node, {TokenType.SELECT})
            return self.source.error("subqueries are not supported", node, offset)
        if isinstance(node, exp.AggFunc) or (
                isinstance(node, exp.Anonymous) and lookup(node.name.lower()) is not None):
            return self.source.error(f"the aggregate {self.function_name(node)}() is not allowed here: an "
                                     "aggregate is a whole SELECT item (or part of HAVING)", node)
        if isinstance(node, exp.Func):
            return self.source.error(f"unknown function {self.function_name(node)}() (functions: "
                                     f"{', '.join(SCALAR_FUNCTIONS)})", node)
        if isinstance(node, exp.Star):
            return self.source.error("* is only a SELECT item of a scan, or count(*)", node)
        return self.source.error(f"{self.source.snippet(node)} ({type(node).__name__}) is not supported", node)

    def resolve(self, name: str, node: exp.Expression) -> str:
        """A column by name; as in DuckDB, case does not matter unless two columns differ only by it."""
        if name in self.schema.names:
            return name
        matches = [column for column in self.schema.names if column.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
        raise self.source.error(f"unknown column {name!r} (columns: {', '.join(self.schema.names)})", node)

    def function_name(self, node: exp.Expression) -> str:
        """The function's name as written."""
        if "start" in node.meta and "end" in node.meta:
            return self.source.text[node.meta["start"]: node.meta["end"] + 1]
        start = self.source.start(node)
        token = next((t for t in self.source.tokens if t.start == start), None)
        if token is not None and token.token_type != TokenType.L_PAREN:
            return token.text
        return node.name if isinstance(node, exp.Anonymous) else node.sql_name().lower()

    def literal(self, node: exp.Expression, what: str) -> Any:
        """A literal parameter's Python value (Arrow takes it as an option, not as a column)."""
        if not (is_literal(node) or (isinstance(node, exp.Neg) and is_literal(node.this))):
            raise self.source.error(f"{what} is a literal, not {self.source.snippet(node)}", node)
        return self.value(self.compile(node), node).as_py()

    def operands(self, *nodes: exp.Expression) -> list[Evaluator]:
        """Operands that meet in one operation, NULLs and text literals cast to the others' type (literals
        once, here)."""
        compiled = [self.compile(node) for node in nodes]
        targets = coerce([self.type(c, n) for c, n in zip(compiled, nodes)], [is_literal(n) for n in nodes])
        result = []
        for evaluate, node, target in zip(compiled, nodes, targets):
            if target is None:
                result.append(evaluate)
            elif is_literal(node):
                constant = cast(self.value(evaluate, node), target)
                result.append(lambda batch, constant=constant: constant)
            else:
                result.append(lambda batch, evaluate=evaluate, target=target: cast(evaluate(batch), target))
        return result
