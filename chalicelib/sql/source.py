"""SQL text to sqlglot's syntax tree, and where a node of it is in the text (line and column), so every error
names the construct and its place. DuckDB's dialect: jobs can be checked by running their text in DuckDB."""
from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from ..errors import JobDefinitionError

DIALECT = "duckdb"


@dataclass(frozen=True)
class Source:
    """A text and its tokens: positions of nodes (sqlglot keeps them on identifiers, literals and function
    names only) and of keywords, which the tree does not keep at all."""

    text: str
    tokens: list[Token] = field(repr=False)

    @classmethod
    def of(cls, text: str) -> "Source":
        try:
            tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(text)
        except TokenError as exc:
            raise JobDefinitionError(f"cannot read the SQL: {exc}") from exc
        return cls(text, tokens)

    def parse(self) -> list[exp.Expression]:
        """The statements (or the one expression) of the text."""
        try:
            trees = sqlglot.parse(self.text, read=DIALECT)
        except ParseError as exc:
            error = exc.errors[0] if exc.errors else {}
            where = f" at line {error['line']}, column {error['col']}" if error.get("line") else ""
            raise JobDefinitionError(f"cannot parse the SQL{where}: {error.get('description', exc)}") from None
        return [tree for tree in trees if tree is not None]

    def start(self, node: exp.Expression) -> int | None:
        """The offset of the node's first token that the tree located; for a call the tree did not locate
        (CAST, TRY_CAST), its name before the parenthesis."""
        starts = [n.meta["start"] for n in node.walk() if "start" in n.meta]
        if not starts:
            return None
        first = min(starts)
        if isinstance(node, exp.Func) and "start" not in node.meta:
            index = next(i for i, t in enumerate(self.tokens) if t.start >= first)
            if index >= 2 and self.tokens[index - 1].token_type == TokenType.L_PAREN:
                return self.tokens[index - 2].start
        return first

    def keyword_before(self, node: exp.Expression, kinds: set[TokenType]) -> int | None:
        """The offset of the last token of one of `kinds` at or before the node's start: the keyword that opens
        a construct whose tree has no position (JOIN, ORDER BY, a subquery's SELECT)."""
        start = self.start(node)
        if start is None:
            return None
        found = [t.start for t in self.tokens if t.token_type in kinds and t.start <= start]
        return found[-1] if found else start

    def position(self, offset: int | None) -> str:
        if offset is None:
            return ""
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return f" at line {line}, column {column}"

    def where(self, node: exp.Expression) -> str:
        return self.position(self.start(node))

    def error(self, what: str, node: exp.Expression | None = None, offset: int | None = None) -> JobDefinitionError:
        """`what` at the node (or offset): e.g. "unknown column 'x' at line 2, column 9"."""
        return JobDefinitionError(what + self.position(offset if offset is not None else
                                                       self.start(node) if node is not None else None))

    def snippet(self, node: exp.Expression) -> str:
        """The node as SQL, for messages."""
        text = node.sql(dialect=DIALECT)
        return text if len(text) <= 60 else text[:57] + "..."


def parse_expression(text: str) -> tuple[Source, exp.Expression]:
    """One expression (a key, an aggregate, a condition) as a job's field holds it."""
    source = Source.of(text)
    trees = source.parse()
    if len(trees) != 1:
        raise JobDefinitionError(f"expected one SQL expression, got {text!r}")
    return source, trees[0]
