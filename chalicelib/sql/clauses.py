"""Where each clause of a SELECT, and each item of its lists, is in the statement's text. Jobs keep their
expressions as the user wrote them (not as sqlglot would print them back), so a job's fingerprint and the
names of its outputs do not change with the parser's version. The tokens give the places: clause keywords and
list commas outside parentheses."""
from __future__ import annotations

from dataclasses import dataclass

from sqlglot.tokens import Token, TokenType

from .source import Source

_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}
_CLAUSES = {TokenType.SELECT: "select", TokenType.FROM: "from", TokenType.WHERE: "where",
            TokenType.GROUP_BY: "group", TokenType.HAVING: "having", TokenType.ORDER_BY: "order",
            TokenType.LIMIT: "limit", TokenType.QUALIFY: "qualify", TokenType.WINDOW: "window",
            TokenType.OFFSET: "offset"}


@dataclass(frozen=True)
class Clauses:
    """The top-level tokens of each clause of the first statement, without its keyword."""

    source: Source
    tokens: dict[str, list[Token]]
    keywords: dict[str, Token]

    @classmethod
    def of(cls, source: Source) -> "Clauses":
        clauses: dict[str, list[Token]] = {}
        keywords: dict[str, Token] = {}
        current: list[Token] | None = None
        depth = 0
        for token in source.tokens:
            if depth == 0 and token.token_type == TokenType.SEMICOLON:
                break
            if depth == 0 and token.token_type in _CLAUSES and _CLAUSES[token.token_type] not in clauses:
                keywords[_CLAUSES[token.token_type]] = token
                current = clauses[_CLAUSES[token.token_type]] = []
                continue
            depth += (token.token_type in _OPEN) - (token.token_type in _CLOSE)
            if current is not None:
                current.append(token)
        return cls(source, clauses, keywords)

    def text(self, clause: str) -> str | None:
        tokens = self.tokens.get(clause)
        return self._text(tokens) if tokens else None

    def items(self, clause: str) -> list[list[Token]]:
        """The clause's comma-separated items (SELECT's and GROUP BY's), each as its tokens."""
        items: list[list[Token]] = [[]]
        depth = 0
        for token in self.tokens.get(clause, []):
            if depth == 0 and token.token_type == TokenType.COMMA:
                items.append([])
                continue
            depth += (token.token_type in _OPEN) - (token.token_type in _CLOSE)
            items[-1].append(token)
        return [item for item in items if item]

    def item_texts(self, clause: str, aliased: list[bool]) -> list[str] | None:
        """Each item's expression as written, its alias (and AS) left out where `aliased`; None when the items
        are not the ones the tree has (then the caller prints the tree instead)."""
        items = self.items(clause)
        if clause == "select" and items and items[0][0].token_type == TokenType.DISTINCT:
            return None
        if len(items) != len(aliased):
            return None
        texts = []
        for tokens, has_alias in zip(items, aliased):
            if has_alias:
                tokens = tokens[:-1]
                if tokens and tokens[-1].token_type == TokenType.ALIAS:
                    tokens = tokens[:-1]
            if not tokens:
                return None
            texts.append(self._text(tokens))
        return texts

    def _text(self, tokens: list[Token]) -> str:
        return self.source.text[tokens[0].start: tokens[-1].end + 1]
