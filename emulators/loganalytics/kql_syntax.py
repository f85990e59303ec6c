"""Tokenizer and parser for the KQL subset the Log Analytics emulator runs.

A real lexer and recursive-descent parser, so an unsupported query fails with a precise message
instead of being half-understood. The grammar (kept in sync with docs/emulators.md):

    query      := Table ( '|' operator )*
    operator   := ('where'|'filter') expr
                | 'project' named (',' named)*        | 'extend' named (',' named)*
                | 'summarize' [named (',' named)*] ['by' named (',' named)*]
                | 'count' | 'distinct' ('*' | expr (',' expr)*)
                | ('take'|'limit') INT | ('order'|'sort') 'by' sortkey (',' sortkey)*
                | 'top' INT 'by' sortkey (',' sortkey)*
    named      := [Name '='] expr
    sortkey    := expr ['asc'|'desc'] ['nulls' ('first'|'last')]
    expr       := and ('or' and)*
    and        := rel ('and' rel)*
    rel        := add [ cmpop add | strop add | inop '(' expr (',' expr)* ')'
                       | ['!']'between' '(' add '..' add ')' ]
    add        := mul (('+'|'-') mul)*
    mul        := unary (('*'|'/'|'%') unary)*
    unary      := '-' unary | postfix
    postfix    := primary ('.' Name | '[' (STRING|INT) ']')*
    primary    := literal | Name '(' [expr (',' expr)*] ')' | Name | '(' expr ')'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

CMP_OPS = frozenset({"==", "!=", "=~", "!~", "<", "<=", ">", ">="})
STRING_OPS = frozenset(
    {
        "has",
        "!has",
        "has_cs",
        "!has_cs",
        "contains",
        "!contains",
        "contains_cs",
        "!contains_cs",
        "startswith",
        "!startswith",
        "startswith_cs",
        "!startswith_cs",
        "endswith",
        "!endswith",
        "endswith_cs",
        "!endswith_cs",
    }
)
IN_OPS = frozenset({"in", "!in", "in~", "!in~"})
# Real KQL operators in the relational position that this subset does not implement.
UNSUPPORTED_REL_OPS = frozenset({"matches", "like", "notlike", "has_any", "has_all", "hasprefix", "hassuffix"})
NEGATABLE = frozenset({"in", "has", "contains", "startswith", "endswith", "between", "hasprefix", "hassuffix"})
NEGATABLE_CS = frozenset({"has_cs", "contains_cs", "startswith_cs", "endswith_cs"})
SUPPORTED_OPERATORS = (
    "where",
    "filter",
    "project",
    "extend",
    "summarize",
    "count",
    "distinct",
    "take",
    "limit",
    "order",
    "sort",
    "top",
)
UNSUPPORTED_SOURCES = frozenset(
    {"let", "union", "search", "find", "print", "range", "datatable", "evaluate", "set", "declare", "alias"}
)

TIMESPAN_UNITS: dict[str, timedelta] = {
    **dict.fromkeys(("d", "day", "days"), timedelta(days=1)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), timedelta(hours=1)),
    **dict.fromkeys(("m", "min", "minute", "minutes"), timedelta(minutes=1)),
    **dict.fromkeys(("s", "sec", "second", "seconds"), timedelta(seconds=1)),
    **dict.fromkeys(("ms", "milli", "millis", "millisecond", "milliseconds"), timedelta(milliseconds=1)),
    **dict.fromkeys(("microsecond", "microseconds"), timedelta(microseconds=1)),
}


class KqlError(Exception):
    """A query the emulator refuses. kind: SyntaxError | SemanticError | Unsupported."""

    def __init__(self, kind: str, message: str, pos: int | None = None, token: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.pos = pos
        self.token = token


def syntax_error(token: Token) -> KqlError:
    shown = token.text or "<end of query>"
    return KqlError("SyntaxError", f"Query could not be parsed at '{shown}'", token.pos, shown)


def unsupported(what: str, token: Token | None = None) -> KqlError:
    return KqlError(
        "Unsupported",
        f"{what} is not supported by the Log Analytics emulator (see docs/emulators.md for the supported subset)",
        token.pos if token else None,
        token.text if token else None,
    )


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT STRING INT REAL TIMESPAN DATETIME OP EOF
    text: str
    pos: int
    end: int
    value: Any = None


_TWO_CHAR = ("==", "!=", "=~", "!~", "<=", ">=", "..")
_ONE_CHAR = "|()[],.=<>+-*/%;"


def _is_ident_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _is_ident_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


class Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def tokens(self) -> list[Token]:
        out = []
        while True:
            token = self._next()
            out.append(token)
            if token.kind == "EOF":
                return out

    def _peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def _skip_space(self) -> None:
        while self.i < len(self.text):
            if self.text[self.i].isspace():
                self.i += 1
            elif self.text.startswith("//", self.i):
                newline = self.text.find("\n", self.i)
                self.i = len(self.text) if newline < 0 else newline + 1
            else:
                return

    def _next(self) -> Token:
        self._skip_space()
        start = self.i
        ch = self._peek()
        if not ch:
            return Token("EOF", "", start, start)
        if ch in "\"'":
            return self._string(start, verbatim=False)
        if ch == "@" and self._peek(1) in "\"'":
            self.i += 1
            return self._string(start, verbatim=True)
        if ch in "hH" and self._peek(1) in "\"'":  # obfuscated string literal h"..."
            self.i += 1
            return self._string(start, verbatim=False)
        if ch.isdigit():
            return self._number(start)
        if _is_ident_start(ch):
            return self._word(start)
        if ch == "!" and _is_ident_start(self._peek(1)):
            self.i += 1
            word = self._read_word()
            if word == "in" and self._peek() == "~":
                self.i += 1
                word = "in~"
            if word not in NEGATABLE and word not in NEGATABLE_CS and word != "in~":
                raise syntax_error(Token("OP", "!", start, start + 1))
            return Token("OP", "!" + word, start, self.i)
        for op in _TWO_CHAR:
            if self.text.startswith(op, self.i):
                self.i += 2
                return Token("OP", op, start, self.i)
        if ch in _ONE_CHAR:
            self.i += 1
            return Token("OP", ch, start, self.i)
        raise syntax_error(Token("OP", ch, start, start + 1))

    def _read_word(self) -> str:
        start = self.i
        while _is_ident_char(self._peek()):
            self.i += 1
        return self.text[start : self.i]

    def _word(self, start: int) -> Token:
        word = self._read_word()
        if word == "in" and self._peek() == "~":
            self.i += 1
            return Token("OP", "in~", start, self.i)
        if word == "datetime":
            save = self.i
            self._skip_space()
            if self._peek() == "(":
                close = self.text.find(")", self.i)
                if close < 0:
                    raise syntax_error(Token("EOF", "", len(self.text), len(self.text)))
                raw = self.text[self.i + 1 : close].strip()
                self.i = close + 1
                return Token("DATETIME", self.text[start : self.i], start, self.i, parse_datetime_literal(raw, start))
            self.i = save
        return Token("IDENT", word, start, self.i)

    def _string(self, start: int, verbatim: bool) -> Token:
        quote = self._peek()
        self.i += 1
        chars: list[str] = []
        while True:
            ch = self._peek()
            if not ch or ch == "\n":
                raise KqlError("SyntaxError", "Unterminated string literal", start, self.text[start : self.i])
            self.i += 1
            if ch == quote:
                if verbatim and self._peek() == quote:  # @"a""b" is a"b
                    chars.append(quote)
                    self.i += 1
                    continue
                return Token("STRING", self.text[start : self.i], start, self.i, "".join(chars))
            if ch == "\\" and not verbatim:
                escaped = self._peek()
                self.i += 1
                mapped = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}.get(escaped)
                if mapped is None:
                    raise KqlError("SyntaxError", f"Unsupported escape sequence '\\{escaped}'", self.i - 2, "\\")
                chars.append(mapped)
                continue
            chars.append(ch)

    def _number(self, start: int) -> Token:
        while self._peek().isdigit():
            self.i += 1
        is_real = False
        if self._peek() == "." and self._peek(1).isdigit():
            is_real = True
            self.i += 1
            while self._peek().isdigit():
                self.i += 1
        if self._peek() in "eE" and (self._peek(1).isdigit() or (self._peek(1) in "+-" and self._peek(2).isdigit())):
            is_real = True
            self.i += 2
            while self._peek().isdigit():
                self.i += 1
        number = self.text[start : self.i]
        if _is_ident_start(self._peek()):
            unit = self._read_word()
            if unit not in TIMESPAN_UNITS:
                raise syntax_error(Token("IDENT", number + unit, start, self.i))
            return Token("TIMESPAN", number + unit, start, self.i, float(number) * TIMESPAN_UNITS[unit])
        if is_real:
            return Token("REAL", number, start, self.i, float(number))
        return Token("INT", number, start, self.i, int(number))


def parse_datetime_literal(raw: str, pos: int) -> datetime:
    """datetime(2026-01-01T00:00:00Z), datetime(2026-01-01 10:00), datetime(2026-01-01): always UTC."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise KqlError("SyntaxError", f"Invalid datetime literal 'datetime({raw})'", pos, raw) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Literal:
    type: str
    value: Any
    pos: int


@dataclass(frozen=True)
class Column:
    name: str
    pos: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    pos: int


@dataclass(frozen=True)
class Member:
    target: Any
    key: str | int
    pos: int


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any
    pos: int


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any
    pos: int


@dataclass(frozen=True)
class InList:
    op: str
    left: Any
    items: tuple[Any, ...]
    pos: int


@dataclass(frozen=True)
class Between:
    negated: bool
    left: Any
    low: Any
    high: Any
    pos: int


@dataclass(frozen=True)
class Named:
    name: str | None
    expr: Any


@dataclass(frozen=True)
class SortKey:
    expr: Any
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Operator:
    """One pipeline stage; fields used depend on `name` (where, project, extend, summarize, ...)."""

    name: str
    pos: int
    predicate: Any = None
    items: tuple[Named, ...] = ()
    by: tuple[Named, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int | None = None
    star: bool = False


@dataclass
class Query:
    table: str
    table_pos: int
    operators: list[Operator] = field(default_factory=list)


# --------------------------------------------------------------------------- parser


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = Lexer(text).tokens()
        self.k = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.k]

    def _advance(self) -> Token:
        token = self.tokens[self.k]
        if token.kind != "EOF":
            self.k += 1
        return token

    def _is(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def _is_word(self, *words: str) -> bool:
        return self.tok.kind == "IDENT" and self.tok.text in words

    def _expect(self, kind: str, text: str | None = None) -> Token:
        if not self._is(kind, text):
            raise syntax_error(self.tok)
        return self._advance()

    def _expect_word(self, word: str) -> Token:
        if not self._is_word(word):
            raise syntax_error(self.tok)
        return self._advance()

    def parse(self) -> Query:
        first = self.tok
        if first.kind != "IDENT":
            raise syntax_error(first)
        if first.text in UNSUPPORTED_SOURCES:
            raise unsupported(f"'{first.text}'", first)
        self._advance()
        if self._is("OP", "(") or self._is("OP", "."):
            raise unsupported("a function call or cross-resource reference as the query source", self.tok)
        query = Query(first.text, first.pos)
        while self._is("OP", "|"):
            self._advance()
            query.operators.append(self._operator())
        if self._is("OP", ";"):
            raise unsupported("more than one statement", self.tok)
        if self.tok.kind != "EOF":
            raise syntax_error(self.tok)
        return query

    def _operator_name(self) -> Token:
        token = self._expect("IDENT")
        name, end = token.text, token.end
        while (
            self._is("OP", "-")
            and self.tok.pos == end
            and self.tokens[self.k + 1].kind == "IDENT"
            and self.tokens[self.k + 1].pos == self.tok.end
        ):
            self._advance()
            part = self._advance()
            name, end = f"{name}-{part.text}", part.end
        return Token("IDENT", name, token.pos, end)

    def _operator(self) -> Operator:
        token = self._operator_name()
        name, pos = token.text, token.pos
        if name not in SUPPORTED_OPERATORS:
            raise unsupported(f"The '{name}' operator", token)
        if name in ("where", "filter"):
            return Operator("where", pos, predicate=self.expr())
        if name in ("project", "extend"):
            return Operator(name, pos, items=self._named_list())
        if name == "summarize":
            items: tuple[Named, ...] = ()
            if not self._is_word("by") and not self._at_stage_end():
                items = self._named_list()
            by: tuple[Named, ...] = ()
            if self._is_word("by"):
                self._advance()
                by = self._named_list()
            if not items and not by:
                raise syntax_error(self.tok)
            return Operator("summarize", pos, items=items, by=by)
        if name == "count":
            return Operator("count", pos)
        if name == "distinct":
            if self._is("OP", "*"):
                self._advance()
                return Operator("distinct", pos, star=True)
            return Operator("distinct", pos, items=tuple(Named(None, e) for e in self._expr_list()))
        if name in ("take", "limit"):
            return Operator("take", pos, count=self._int())
        if name in ("order", "sort"):
            self._expect_word("by")
            return Operator("order", pos, sort=self._sort_keys())
        # top N by key
        count = self._int()
        self._expect_word("by")
        return Operator("top", pos, count=count, sort=self._sort_keys())

    def _at_stage_end(self) -> bool:
        return self.tok.kind == "EOF" or self._is("OP", "|") or self._is("OP", ";")

    def _int(self) -> int:
        token = self._expect("INT")
        return int(token.value)

    def _named_list(self) -> tuple[Named, ...]:
        items = [self._named()]
        while self._is("OP", ","):
            self._advance()
            items.append(self._named())
        return tuple(items)

    def _named(self) -> Named:
        if self.tok.kind == "IDENT" and self.tokens[self.k + 1].kind == "OP" and self.tokens[self.k + 1].text == "=":
            name = self._advance().text
            self._advance()
            return Named(name, self.expr())
        return Named(None, self.expr())

    def _expr_list(self) -> list[Any]:
        items = [self.expr()]
        while self._is("OP", ","):
            self._advance()
            items.append(self.expr())
        return items

    def _sort_keys(self) -> tuple[SortKey, ...]:
        keys = []
        while True:
            expr = self.expr()
            descending = True  # KQL sorts descending unless told otherwise
            if self._is_word("asc", "desc"):
                descending = self._advance().text == "desc"
            nulls_first = not descending
            if self._is_word("nulls"):
                self._advance()
                if not self._is_word("first", "last"):
                    raise syntax_error(self.tok)
                nulls_first = self._advance().text == "first"
            keys.append(SortKey(expr, descending, nulls_first))
            if not self._is("OP", ","):
                return tuple(keys)
            self._advance()

    # expressions -----------------------------------------------------------------
    def expr(self) -> Any:
        left = self._and()
        while self._is_word("or"):
            pos = self._advance().pos
            left = Binary("or", left, self._and(), pos)
        return left

    def _and(self) -> Any:
        left = self._rel()
        while self._is_word("and"):
            pos = self._advance().pos
            left = Binary("and", left, self._rel(), pos)
        return left

    def _rel(self) -> Any:
        left = self._add()
        token = self.tok
        if token.kind == "OP" and token.text in CMP_OPS:
            self._advance()
            return Binary(token.text, left, self._add(), token.pos)
        op = token.text if token.kind in ("OP", "IDENT") else ""
        if op in STRING_OPS:
            self._advance()
            return Binary(op, left, self._add(), token.pos)
        if op in IN_OPS:
            self._advance()
            self._expect("OP", "(")
            if self._is_word(*UNSUPPORTED_SOURCES) or (self.tok.kind == "IDENT" and self._next_is_pipe()):
                raise unsupported(f"A tabular '{op}' operand", self.tok)
            items = self._expr_list()
            self._expect("OP", ")")
            return InList(op, left, tuple(items), token.pos)
        if op in ("between", "!between"):
            self._advance()
            self._expect("OP", "(")
            low = self._add()
            self._expect("OP", "..")
            high = self._add()
            self._expect("OP", ")")
            return Between(op == "!between", left, low, high, token.pos)
        if op in UNSUPPORTED_REL_OPS or op.lstrip("!") in UNSUPPORTED_REL_OPS:
            raise unsupported(f"The '{op}' operator", token)
        return left

    def _next_is_pipe(self) -> bool:
        following = self.tokens[self.k + 1]
        return following.kind == "OP" and following.text == "|"

    def _add(self) -> Any:
        left = self._mul()
        while self.tok.kind == "OP" and self.tok.text in ("+", "-"):
            token = self._advance()
            left = Binary(token.text, left, self._mul(), token.pos)
        return left

    def _mul(self) -> Any:
        left = self._unary()
        while self.tok.kind == "OP" and self.tok.text in ("*", "/", "%"):
            token = self._advance()
            left = Binary(token.text, left, self._unary(), token.pos)
        return left

    def _unary(self) -> Any:
        if self._is("OP", "-"):
            token = self._advance()
            return Unary("-", self._unary(), token.pos)
        if self._is("OP", "+"):
            self._advance()
            return self._unary()
        return self._postfix()

    def _postfix(self) -> Any:
        node = self._primary()
        while True:
            if self._is("OP", "."):
                token = self._advance()
                name = self._expect("IDENT")
                node = Member(node, name.text, token.pos)
            elif self._is("OP", "["):
                token = self._advance()
                key = self._advance()
                if key.kind not in ("STRING", "INT"):
                    raise syntax_error(key)
                self._expect("OP", "]")
                node = Member(node, key.value, token.pos)
            else:
                return node

    def _primary(self) -> Any:
        token = self.tok
        if token.kind in ("STRING", "INT", "REAL", "TIMESPAN", "DATETIME"):
            self._advance()
            kind = {"STRING": "string", "INT": "long", "REAL": "real", "TIMESPAN": "timespan", "DATETIME": "datetime"}
            return Literal(kind[token.kind], token.value, token.pos)
        if token.kind == "IDENT":
            self._advance()
            if token.text in ("true", "false"):
                return Literal("bool", token.text == "true", token.pos)
            if self._is("OP", "("):
                self._advance()
                args: list[Any] = []
                if not self._is("OP", ")"):
                    args = self._expr_list()
                self._expect("OP", ")")
                return Call(token.text, tuple(args), token.pos)
            return Column(token.text, token.pos)
        if self._is("OP", "("):
            self._advance()
            inner = self.expr()
            self._expect("OP", ")")
            return inner
        raise syntax_error(token)


def parse(text: str) -> Query:
    """Parse `text` into a Query or raise KqlError."""
    return Parser(text).parse()
