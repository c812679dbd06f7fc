"""One SQL statement to the fields of a job: `SELECT keys, aggregates FROM table [WHERE c] GROUP BY keys
[HAVING c]` is an aggregation, `SELECT columns FROM table [WHERE c]` a scan. Every expression is compiled here,
against the table's columns, so each error names its construct with the line and column in the statement.

A GROUP BY item is a SELECT item's position (GROUP BY 1), its alias, the same expression, or another
expression (then it is a key of its own, named by its text: a served group's key holds every GROUP BY column).
`GROUP BY ALL` groups by every SELECT item that is not an aggregate. The first key that is a date_trunc or
time_bucket of a column is the job's event-time window: the API's window_from and window_to filter on it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from ..aggregation import AggregationPlan
from ..errors import JobDefinitionError
from .aggregates import aggregate, is_aggregate
from .clauses import Clauses
from .expressions import Compiler
from .source import DIALECT, Source

_ALLOWED = {"expressions", "from_", "where", "group", "having", "kind"}
_JOINS = {TokenType.JOIN, TokenType.COMMA}
# Clauses a job cannot have, by the tree's argument: what to call them, and the keyword that opens them.
_REFUSED = {"with_": ("WITH (common table expressions)", {TokenType.WITH}), "joins": ("JOIN", _JOINS),
            "laterals": ("LATERAL", {TokenType.LATERAL}), "distinct": ("SELECT DISTINCT", {TokenType.DISTINCT}),
            "order": ("ORDER BY", None), "limit": ("LIMIT", None), "offset": ("OFFSET", None),
            "qualify": ("QUALIFY", None), "windows": ("WINDOW", None), "pivots": ("PIVOT", set()),
            "sample": ("USING SAMPLE", set()), "into": ("INTO", set())}
_CLAUSE_OF = {"order": "order", "limit": "limit", "offset": "offset", "qualify": "qualify", "windows": "window"}
_TIME_BUCKETS = (exp.TimestampTrunc, exp.DateTrunc, exp.DateBin)


@dataclass(frozen=True)
class SqlQuery:
    """What a statement asks of its table, as the Job fields that say it (SQL expression text)."""

    table: str
    filter: str | None = None
    keys: dict[str, str] | None = None
    aggregates: dict[str, str] | None = None
    select: dict[str, str] | None = None
    having: str | None = None
    window_key: str | None = None

    def job_fields(self) -> dict[str, Any]:
        fields = {"filter": self.filter, "keys": self.keys, "aggregates": self.aggregates, "select": self.select,
                  "having": self.having, "window_key": self.window_key}
        return {name: value for name, value in fields.items() if value is not None}


@dataclass
class _Item:
    name: str
    node: exp.Expression
    text: str
    aggregate: bool = False
    at: exp.Expression | None = field(default=None, repr=False)  # where to point an error


def translate(sql: str, tables: Mapping[str, Any]) -> SqlQuery:
    """The job fields of `sql` over `tables` (name -> anything with `.format.schema`, e.g. tables.Table)."""
    source = Source.of(sql)
    trees = source.parse()
    if not trees:
        raise JobDefinitionError("the SQL holds no statement")
    if len(trees) > 1:
        raise source.error("a job is one statement; a second one starts", offset=_second_statement(source))
    tree = trees[0]
    _refuse_unsupported(source, tree)
    table = _table(source, tree, tables)
    schema = tables[table].format.schema
    compiler = Compiler(source, schema)
    clauses = Clauses.of(source)
    items = _select_items(source, tree, clauses, schema)
    for item in items:
        if not item.aggregate:
            compiler.expression(item.node, item.text)  # an unknown column or function, before any grouping error
    where = tree.args.get("where")
    filter_text = None
    if where is not None:
        _no_aggregates(source, where.this, "WHERE", "use HAVING to filter groups")
        filter_text = clauses.text("where") or where.this.sql(dialect=DIALECT)
        compiler.condition(where.this, filter_text, "WHERE")
    if tree.args.get("group") is None and not any(item.aggregate for item in items):
        if tree.args.get("having") is not None:
            raise source.error("HAVING needs GROUP BY", tree.args["having"])
        _distinct_names(source, items)
        return SqlQuery(table, filter_text, select={item.name: item.text for item in items})
    keys, aggregates = _grouping(source, tree, clauses, items, schema)
    _distinct_names(source, keys + aggregates)
    compiled_keys = tuple((key.name, compiler.expression(key.node, key.text)) for key in keys)
    specs = tuple(aggregate(compiler, item.name, item.node, item.text) for item in aggregates)
    filter_expression = compiler.expression(where.this, filter_text) if where is not None else None
    plan = AggregationPlan(input_schema=schema, keys=compiled_keys, aggregates=specs, filter=filter_expression)
    having = tree.args.get("having")
    window = next((key.name for key in keys if isinstance(key.node, _TIME_BUCKETS)), None)
    return SqlQuery(table, filter_text, keys={key.name: key.text for key in keys},
                    aggregates={item.name: item.text for item in aggregates},
                    having=_having(source, having.this, keys, aggregates, plan.result_schema) if having else None,
                    window_key=window)


def _second_statement(source: Source) -> int | None:
    depth, ended = 0, False
    for token in source.tokens:
        if ended and token.token_type != TokenType.SEMICOLON:
            return token.start
        ended = ended or (depth == 0 and token.token_type == TokenType.SEMICOLON)
        depth += (token.token_type == TokenType.L_PAREN) - (token.token_type == TokenType.R_PAREN)
    return None


def _refuse_unsupported(source: Source, tree: exp.Expression) -> None:
    if isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
        kinds = {TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT}
        offset = next((t.start for t in source.tokens if t.token_type in kinds), None)
        raise source.error(f"{type(tree).__name__.upper()} is not supported: a job is one SELECT", offset=offset)
    if not isinstance(tree, exp.Select):
        raise source.error(f"a job is a SELECT statement, not {source.snippet(tree)!r}", offset=source.tokens[0].start)
    clauses = Clauses.of(source)
    refused = []
    for key, value in tree.args.items():
        if key in _ALLOWED or value in (None, [], False):
            continue
        name, kinds = _REFUSED.get(key, (key.upper(), set()))
        if key == "distinct" and value.args.get("on") is not None:
            name = "DISTINCT ON"
        if key in _CLAUSE_OF and _CLAUSE_OF[key] in clauses.keywords:
            offset = clauses.keywords[_CLAUSE_OF[key]].start
        elif key == "distinct":
            offset = next((t.start for t in source.tokens if t.token_type == TokenType.DISTINCT), None)
        else:
            node = value[0] if isinstance(value, list) else value
            offset = source.keyword_before(node, kinds) if kinds else source.start(node)
        refused.append((offset if offset is not None else len(source.text), name))
    if refused:
        offset, name = min(refused)
        raise source.error(f"{name} is not supported in a job", offset=offset)
    for node in tree.walk():
        if isinstance(node, exp.Window):
            raise source.error(f"window functions (OVER) are not supported: {source.snippet(node)}", node)
        if node is not tree and isinstance(node, (exp.Select, exp.Subquery, exp.Union)):
            raise source.error("subqueries are not supported", offset=source.keyword_before(node, {TokenType.SELECT}))


def _table(source: Source, tree: exp.Select, tables: Mapping[str, Any]) -> str:
    origin = tree.args.get("from_")
    if origin is None:
        raise source.error("a job reads a table: add FROM <table>", offset=source.tokens[-1].start)
    table = origin.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise source.error(f"FROM takes a table's name (tables: {', '.join(tables)})", table)
    if table.args.get("db") or table.args.get("catalog"):
        raise source.error(f"qualified table name {table.sql(dialect=DIALECT)}: name the table alone", table)
    name = table.name
    matches = [t for t in tables if t == name] or [t for t in tables if t.lower() == name.lower()]
    if len(matches) != 1:
        raise source.error(f"unknown table {name!r} (tables: {', '.join(tables) or 'none'})", table)
    return matches[0]


def _select_items(source: Source, tree: exp.Select, clauses: Clauses, schema: pa.Schema) -> list[_Item]:
    nodes = tree.expressions
    texts = clauses.item_texts("select", [isinstance(n, exp.Alias) for n in nodes])
    items = []
    for index, node in enumerate(nodes):
        expression = node.this if isinstance(node, exp.Alias) else node
        if isinstance(expression, exp.Star):
            items += [_Item(name, exp.column(name, quoted=True), _identifier(name), at=node) for name in schema.names]
            continue
        text = texts[index] if texts else expression.sql(dialect=DIALECT)
        whole = is_aggregate(expression)
        if not whole:
            _no_aggregates(source, expression, "a SELECT item",
                           "an aggregate is a whole SELECT item; compute with its result in the client")
        items.append(_Item(node.alias if isinstance(node, exp.Alias) else text, expression, text, whole, node))
    return items


def _identifier(name: str) -> str:
    """A column's name as SQL: quoted only when it must be."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.upper() not in Tokenizer.KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _no_aggregates(source: Source, node: exp.Expression, where: str, hint: str) -> None:
    for inner in node.walk():
        if is_aggregate(inner):
            raise source.error(f"the aggregate {source.snippet(inner)} cannot be part of {where}: {hint}", inner)


def _grouping(source: Source, tree: exp.Select, clauses: Clauses, items: list[_Item],
              schema: pa.Schema) -> tuple[list[_Item], list[_Item]]:
    """(keys, aggregates): the SELECT's plain items, each of which must be grouped by, then GROUP BY
    expressions not selected; the aggregates in SELECT order."""
    group = tree.args.get("group")
    aggregates = [item for item in items if item.aggregate]
    if group is None:
        raise source.error("an aggregate without GROUP BY is one total over every row: Tally serves groups, "
                           "so add GROUP BY", aggregates[0].at)
    sets = [n for n in group.expressions if isinstance(n, (exp.Rollup, exp.Cube, exp.GroupingSets))]
    sets += [n for kind in ("grouping_sets", "cube", "rollup") for n in group.args.get(kind) or []]
    if sets:
        raise source.error(f"GROUP BY {sets[0].key.upper().replace('GROUPINGSETS', 'GROUPING SETS')} is not "
                           "supported", sets[0])
    plain = [item for item in items if not item.aggregate]
    if any(isinstance(item.at, exp.Star) or (isinstance(item.at, exp.Alias) and isinstance(item.at.this, exp.Star))
           for item in plain):
        raise source.error("SELECT * is for scans: an aggregation selects its keys and aggregates", tree)
    extra: list[_Item] = []
    if group.args.get("all"):
        grouped = {id(item) for item in plain}
    else:
        grouped = set()
        nodes = group.expressions
        texts = clauses.item_texts("group", [False] * len(nodes)) or [n.sql(dialect=DIALECT) for n in nodes]
        for node, text in zip(nodes, texts):
            item = _grouped_item(source, node, items, schema)
            if item is None:
                extra.append(_Item(text, node, text, at=node))
            elif item.aggregate:
                raise source.error(f"GROUP BY {text} names an aggregate", node)
            else:
                grouped.add(id(item))
    for item in plain:
        if id(item) not in grouped:
            raise source.error(f"{item.text} is neither in GROUP BY nor an aggregate", item.at)
    if not aggregates:
        raise source.error("GROUP BY without an aggregate: a group is served with its values, so select one "
                           "(e.g. count(*))", group)
    return plain + extra, aggregates


def _grouped_item(source: Source, node: exp.Expression, items: list[_Item], schema: pa.Schema) -> _Item | None:
    """The SELECT item a GROUP BY item names: by position, by alias (unless a column has that name, as in
    SQL), or by being the same expression."""
    if isinstance(node, exp.Literal) and not node.is_string:
        position = int(node.this) if node.this.isdigit() else 0
        if not 1 <= position <= len(items):
            raise source.error(f"GROUP BY {node.this}: the SELECT has {len(items)} items", node)
        return items[position - 1]
    if isinstance(node, exp.Column) and not node.table:
        is_column = any(name.lower() == node.name.lower() for name in schema.names)
        aliased = [item for item in items if item.name == node.name and isinstance(item.at, exp.Alias)]
        if aliased and not is_column:
            return aliased[0]
    wanted = _normal(node)
    return next((item for item in items if not item.aggregate and _normal(item.node) == wanted), None)


def _normal(node: exp.Expression) -> str:
    """The node's text up to spelling: case of keywords and unquoted names, spaces, parentheses as printed."""
    return node.sql(dialect=DIALECT, normalize=True)


def _distinct_names(source: Source, items: list[_Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise source.error(f"two outputs are named {item.name!r}: give one an alias (AS name)", item.at)
        if item.name.startswith("__"):
            raise source.error(f"output {item.name!r}: names starting with '__' are Tally's", item.at)
        seen.add(item.name)


def _having(source: Source, condition: exp.Expression, keys: list[_Item], aggregates: list[_Item],
            result: pa.Schema) -> str:
    """HAVING as a condition over the outputs (the keys and aggregates as named): the SELECT's aggregates and
    keys, and their names, are what it may use."""
    outputs = {_normal(item.node): item.name for item in keys + aggregates}
    names = [item.name for item in keys + aggregates]

    def over_outputs(node: exp.Expression) -> exp.Expression:
        if _normal(node) in outputs:
            return exp.column(outputs[_normal(node)], quoted=True)
        if isinstance(node, exp.Column):
            named = [name for name in names if name == node.name] or [
                name for name in names if name.lower() == node.name.lower()]
            if node.table or len(named) != 1:
                raise source.error(f"HAVING's {node.sql(dialect=DIALECT)} is neither a GROUP BY key nor an output "
                                   f"(outputs: {', '.join(names)})", node)
            return exp.column(named[0], quoted=True)
        if is_aggregate(node):
            raise source.error(f"HAVING's aggregate {source.snippet(node)} is not a SELECT item: select it (AS a "
                               "name) to filter on it", node)
        return node

    rewritten = condition.transform(over_outputs)
    text = rewritten.sql(dialect=DIALECT)
    Compiler(source, result).condition(rewritten, text, "HAVING")
    return text
