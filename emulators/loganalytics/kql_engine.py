"""Type-checks and runs a parsed KQL-subset query over in-memory rows.

Checking happens before any row is read, as in Kusto: an unknown column, comparing a string column
with a number (`ResultCode == 401`), or an aggregate outside `summarize` are semantic errors (400),
never an empty result. Values at run time: str, int, float, bool, datetime (UTC), timedelta,
JSON values for dynamic, None for null (strings are never null, only empty).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cmp_to_key
from typing import Any

from emulators.loganalytics.kql_syntax import (
    Between,
    Binary,
    Call,
    Column,
    InList,
    KqlError,
    Literal,
    Member,
    Named,
    Operator,
    Query,
    Token,
    Unary,
    unsupported,
)
from emulators.loganalytics.telemetry_tables import (
    BOOL,
    DATETIME,
    DYNAMIC,
    GUID,
    INT,
    LONG,
    NUMERIC,
    REAL,
    STRING,
    TIMESPAN,
    Schema,
    format_datetime,
)

Row = dict[str, Any]
Fn = Callable[[Row], Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Typed:
    """A compiled scalar expression: its Kusto type, how to compute it, and its default column name."""

    type: str
    fn: Fn
    name: str | None = None


@dataclass(frozen=True)
class Result:
    schema: Schema
    rows: list[Row]


def semantic(message: str, pos: int | None = None, token: str | None = None) -> KqlError:
    return KqlError("SemanticError", message, pos, token)


# --------------------------------------------------------------------------- value helpers


def format_timespan(value: timedelta) -> str:
    """Kusto's timespan text: [-][d.]hh:mm:ss[.fffffff]."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.days:
        text = f"{value.days}.{text}"
    if value.microseconds:
        text += f".{value.microseconds * 10:07d}"
    return sign + text


def to_text(value: Any) -> str:
    """tostring(): how any value reads as a string; null reads as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return ("bool", value)  # keep true distinct from 1
    return value


def _equal(a: Any, b: Any, fold: bool = False) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if fold:
        return to_text(a).lower() == to_text(b).lower()
    return bool(a == b)


def _order(a: Any, b: Any) -> int | None:
    if a is None or b is None:
        return None
    try:
        return (a > b) - (a < b)
    except TypeError:
        return None


def _has_term(haystack: str, needle: str) -> bool:
    """Kusto `has`: the needle occurs aligned to term boundaries (terms are alphanumeric runs)."""
    if not needle:
        return True
    hay, term = haystack.lower(), needle.lower()
    start = hay.find(term)
    while start >= 0:
        end = start + len(term)
        left_ok = start == 0 or not hay[start - 1].isalnum() or not term[0].isalnum()
        right_ok = end == len(hay) or not hay[end].isalnum() or not term[-1].isalnum()
        if left_ok and right_ok:
            return True
        start = hay.find(term, start + 1)
    return False


def _string_op(op: str) -> Callable[[str, str], bool]:
    base = op.lstrip("!")
    case_sensitive = base.endswith("_cs")
    base = base.removesuffix("_cs")

    def test(a: str, b: str) -> bool:
        if base == "has":
            return _has_term(a, b) if not case_sensitive else _has_term(a, b) and b in a
        if not case_sensitive:
            a, b = a.lower(), b.lower()
        if base == "contains":
            return b in a
        if base == "startswith":
            return a.startswith(b)
        return a.endswith(b)

    if op.startswith("!"):
        return lambda a, b: not test(a, b)
    return test


# conversions (null in, null out; unparsable text gives null as in Kusto)
def _to_long(value: Any) -> int | None:
    if value is None or isinstance(value, dict | list | datetime | timedelta):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(float(str(value).strip()))
        except (ValueError, OverflowError):
            return None


def _to_real(value: Any) -> float | None:
    if value is None or isinstance(value, dict | list | datetime | timedelta):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    return None


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return None


def _to_dynamic(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _bin(value: Any, size: Any) -> Any:
    if value is None or size is None:
        return None
    if isinstance(value, datetime):
        if not isinstance(size, timedelta) or size <= timedelta(0):
            return None
        return EPOCH + ((value - EPOCH) // size) * size
    if isinstance(value, timedelta):
        return (value // size) * size if isinstance(size, timedelta) and size > timedelta(0) else None
    if size == 0:
        return None
    floored = math.floor(value / size) * size
    return int(floored) if isinstance(value, int) and isinstance(size, int) else float(floored)


# --------------------------------------------------------------------------- compiler

CONVERSIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "tostring": (STRING, to_text),
    "toint": (INT, _to_long),
    "tolong": (LONG, _to_long),
    "toreal": (REAL, _to_real),
    "todouble": (REAL, _to_real),
    "tobool": (BOOL, _to_bool),
    "toboolean": (BOOL, _to_bool),
    "todatetime": (DATETIME, _to_datetime),
    "todynamic": (DYNAMIC, _to_dynamic),
    "parse_json": (DYNAMIC, _to_dynamic),
}
AGGREGATES = ("count", "countif", "dcount", "sum", "avg", "min", "max", "make_set")
SCALAR_FUNCTIONS = (
    *CONVERSIONS,
    "ago",
    "now",
    "bin",
    "floor",
    "not",
    "iff",
    "iif",
    "isempty",
    "isnotempty",
    "isnull",
    "isnotnull",
    "tolower",
    "toupper",
    "strlen",
    "strcat",
    "column_ifexists",
)


_TIME_ARITHMETIC = {
    ("-", DATETIME, DATETIME): TIMESPAN,
    ("+", DATETIME, TIMESPAN): DATETIME,
    ("-", DATETIME, TIMESPAN): DATETIME,
    ("+", TIMESPAN, DATETIME): DATETIME,
    ("+", TIMESPAN, TIMESPAN): TIMESPAN,
    ("-", TIMESPAN, TIMESPAN): TIMESPAN,
    ("/", TIMESPAN, TIMESPAN): REAL,
}


def _arithmetic_type(op: str, a: str, b: str) -> str | None:
    """The result type of `a op b`, or None when Kusto refuses it."""
    if a in NUMERIC and b in NUMERIC:
        return _numeric_result(a, b)
    if DYNAMIC in (a, b):
        return DYNAMIC
    scaled = (a == TIMESPAN and b in NUMERIC) or (op == "*" and b == TIMESPAN and a in NUMERIC)
    if op in ("*", "/") and scaled:
        return TIMESPAN
    return _TIME_ARITHMETIC.get((op, a, b))


def _numeric_result(a: str, b: str) -> str:
    if REAL in (a, b):
        return REAL
    return LONG if LONG in (a, b) else INT


def comparable(a: str, b: str) -> bool:
    if DYNAMIC in (a, b) or a == b:
        return True
    if a in NUMERIC and b in NUMERIC:
        return True
    return {a, b} <= {STRING, GUID}


class ExpressionCompiler:
    """Compiles expressions against one input schema, for error messages naming the operator."""

    def __init__(self, schema: Schema, operator: str, now: datetime) -> None:
        self.schema = schema
        self.operator = operator
        self.now = now

    def compile(self, node: Any) -> Typed:
        handler = getattr(self, f"_{type(node).__name__.lower()}")
        return handler(node)

    def boolean(self, node: Any) -> Typed:
        typed = self.compile(node)
        if typed.type not in (BOOL, DYNAMIC):
            message = f"'{self.operator}' operator: the predicate must be of type bool, not {typed.type}"
            raise semantic(message, node.pos)
        return typed

    def _literal(self, node: Literal) -> Typed:
        value = node.value
        return Typed(node.type, lambda _row: value)

    def _column(self, node: Column) -> Typed:
        if node.name not in self.schema:
            raise semantic(
                f"'{self.operator}' operator: Failed to resolve scalar expression named '{node.name}'",
                node.pos,
                node.name,
            )
        name = node.name
        return Typed(self.schema[name], lambda row: row.get(name), name)

    def _member(self, node: Member) -> Typed:
        target = self.compile(node.target)
        if target.type != DYNAMIC:
            raise semantic(f"Member access ('.{node.key}') needs a dynamic value, not {target.type}", node.pos)
        key, get = node.key, target.fn

        def member(row: Row) -> Any:
            value = get(row)
            if isinstance(value, dict) and isinstance(key, str):
                return value.get(key)
            if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
                return value[key]
            return None

        name = f"{target.name}_{key}" if target.name else None
        return Typed(DYNAMIC, member, name)

    def _unary(self, node: Unary) -> Typed:
        operand = self.compile(node.operand)
        if operand.type not in (*NUMERIC, TIMESPAN, DYNAMIC):
            raise semantic(f"Unary minus needs a number or timespan, not {operand.type}", node.pos)
        get = operand.fn
        return Typed(operand.type, lambda row: None if (v := get(row)) is None else -v)

    def _binary(self, node: Binary) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op in ("and", "or"):
            for side, sub in ((left, node.left), (right, node.right)):
                if side.type not in (BOOL, DYNAMIC):
                    raise semantic(f"'{op}' needs bool operands, not {side.type}", getattr(sub, "pos", node.pos))
            return Typed(BOOL, _logic(op, left.fn, right.fn))
        if op in ("==", "!=", "<", "<=", ">", ">="):
            if not comparable(left.type, right.type):
                raise semantic(
                    f"Cannot compare values of types {left.type} and {right.type}. Try adding explicit casts",
                    node.pos,
                    op,
                )
            guid = GUID in (left.type, right.type)  # guids compare without regard to case
            return Typed(BOOL, _comparison(op, left.fn, right.fn, fold=guid))
        if op in ("=~", "!~"):
            self._require_text(op, left, right, node.pos)
            negate = op == "!~"
            lf, rf = left.fn, right.fn
            return Typed(BOOL, lambda row: _negate(_equal(lf(row), rf(row), fold=True), negate))
        if op.lstrip("!").removesuffix("_cs") in ("has", "contains", "startswith", "endswith"):
            if right.type not in (STRING, DYNAMIC):
                raise semantic(f"'{op}' operator: the right operand must be a string, not {right.type}", node.pos)
            test, lf, rf = _string_op(op), left.fn, right.fn
            return Typed(BOOL, lambda row: test(to_text(lf(row)), to_text(rf(row))))
        return self._arithmetic(node, left, right)

    def _require_text(self, op: str, left: Typed, right: Typed, pos: int) -> None:
        for side in (left, right):
            if side.type not in (STRING, GUID, DYNAMIC):
                raise semantic(f"'{op}' operator compares strings, not {side.type}", pos, op)

    def _arithmetic(self, node: Binary, left: Typed, right: Typed) -> Typed:
        op, a, b = node.op, left.type, right.type
        result = _arithmetic_type(op, a, b)
        if result is None:
            raise semantic(f"Operator '{op}' cannot be applied to {a} and {b}", node.pos, op)
        lf, rf = left.fn, right.fn
        integer = result in (INT, LONG)

        def arithmetic(row: Row) -> Any:
            x, y = lf(row), rf(row)
            if x is None or y is None:
                return None
            try:
                if op == "+":
                    return x + y
                if op == "-":
                    return x - y
                if op == "*":
                    return x * y
                if op == "/" and integer:  # integer division truncates toward zero
                    quotient = abs(x) // abs(y)
                    return quotient if (x < 0) == (y < 0) else -quotient
                if op == "/":
                    return x / y
                return x % y
            except (ZeroDivisionError, TypeError, OverflowError):
                return None

        return Typed(result, arithmetic)

    def _inlist(self, node: InList) -> Typed:
        left = self.compile(node.left)
        items = [self.compile(item) for item in node.items]
        fold = node.op.endswith("~") or left.type == GUID
        for item, source in zip(items, node.items, strict=True):
            if fold:
                self._require_text(node.op, left, item, node.pos)
            elif not comparable(left.type, item.type):
                raise semantic(
                    f"'{node.op}' operator: cannot compare {left.type} with {item.type}. Try adding explicit casts",
                    getattr(source, "pos", node.pos),
                )
        negate = node.op.startswith("!")
        lf, fns = left.fn, [item.fn for item in items]

        def member(row: Row) -> bool | None:
            value = lf(row)
            if value is None:
                return None
            found = any(_equal(value, fn(row), fold=fold) for fn in fns)
            return not found if negate else found

        return Typed(BOOL, member)

    def _between(self, node: Between) -> Typed:
        left, low, high = self.compile(node.left), self.compile(node.low), self.compile(node.high)
        if left.type not in (*NUMERIC, DATETIME, TIMESPAN, DYNAMIC):
            raise semantic(f"'between' needs a number, datetime or timespan, not {left.type}", node.pos)
        high_is_span = left.type == DATETIME and high.type == TIMESPAN
        for bound in (low, high):
            if bound is high and high_is_span:
                continue
            if not comparable(left.type, bound.type):
                raise semantic(f"'between' bounds of type {bound.type} do not match {left.type}", node.pos)
        lf, lof, hif, negate = left.fn, low.fn, high.fn, node.negated

        def between(row: Row) -> bool | None:
            value, lo, hi = lf(row), lof(row), hif(row)
            if value is None or lo is None or hi is None:
                return None
            if high_is_span:
                hi = lo + hi
            try:
                inside = lo <= value <= hi
            except TypeError:
                return None
            return not inside if negate else inside

        return Typed(BOOL, between)

    def _call(self, node: Call) -> Typed:
        name = node.name
        if name in AGGREGATES:
            raise semantic(f"'{name}' is an aggregation function; it is only valid in summarize", node.pos, name)
        if name not in SCALAR_FUNCTIONS:
            raise unsupported(f"The function '{name}()'", _token_at(node.pos, name))
        if name == "column_ifexists":
            return self._column_ifexists(node)
        args = [self.compile(arg) for arg in node.args]
        return self._scalar(node, args)

    def _column_ifexists(self, node: Call) -> Typed:
        """column_ifexists("Name", default): the column when the table has it, else the default. Queries
        over AzureDiagnostics need it: a column exists there only once some resource has filled it."""
        if len(node.args) != 2:
            raise semantic(f"'column_ifexists' expects 2 argument(s), got {len(node.args)}", node.pos, node.name)
        named = node.args[0]
        if not (isinstance(named, Literal) and named.type == STRING):
            raise semantic("'column_ifexists' expects the column name as a string literal", node.pos, node.name)
        if named.value in self.schema:
            return self._column(Column(named.value, named.pos))
        return self.compile(node.args[1])

    def _arity(self, node: Call, args: list[Typed], low: int, high: int) -> None:
        if not low <= len(args) <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise semantic(f"'{node.name}' expects {expected} argument(s), got {len(args)}", node.pos, node.name)

    def _scalar(self, node: Call, args: list[Typed]) -> Typed:
        name = node.name
        if name in CONVERSIONS:
            self._arity(node, args, 1, 1)
            kind, convert = CONVERSIONS[name]
            get = args[0].fn
            return Typed(kind, lambda row: convert(get(row)), args[0].name)
        if name in ("ago", "now"):
            self._arity(node, args, 1 if name == "ago" else 0, 1)
            if args and args[0].type != TIMESPAN:
                raise semantic(f"'{name}' expects a timespan, not {args[0].type}", node.pos, name)
            now, offset = self.now, (args[0].fn if args else None)
            sign = -1 if name == "ago" else 1
            return Typed(DATETIME, lambda row: now + sign * (offset(row) if offset else timedelta(0)))
        if name in ("bin", "floor"):
            self._arity(node, args, 2, 2)
            value, size = args
            if value.type not in (*NUMERIC, DATETIME, TIMESPAN, DYNAMIC):
                raise semantic(f"'{name}' cannot round a {value.type}", node.pos, name)
            if value.type in (DATETIME, TIMESPAN) and size.type != TIMESPAN:
                raise semantic(f"'{name}' of a {value.type} needs a timespan bin size", node.pos, name)
            kind = LONG if value.type in (INT, LONG) and size.type in (INT, LONG) else value.type
            if value.type in NUMERIC and size.type == REAL:
                kind = REAL
            vf, sf = value.fn, size.fn
            return Typed(kind, lambda row: _bin(vf(row), sf(row)), value.name)
        if name == "not":
            self._arity(node, args, 1, 1)
            if args[0].type not in (BOOL, DYNAMIC):
                raise semantic(f"'not' expects a bool, not {args[0].type}", node.pos, name)
            get = args[0].fn
            return Typed(BOOL, lambda row: None if (v := get(row)) is None else not v)
        if name in ("iff", "iif"):
            self._arity(node, args, 3, 3)
            cond, then, other = args
            if cond.type not in (BOOL, DYNAMIC):
                raise semantic(f"'{name}' expects a bool condition, not {cond.type}", node.pos, name)
            if not comparable(then.type, other.type):
                raise semantic(f"'{name}' branches differ in type: {then.type} and {other.type}", node.pos, name)
            kind = _numeric_result(then.type, other.type) if then.type in NUMERIC else then.type
            cf, tf, of = cond.fn, then.fn, other.fn
            return Typed(kind, lambda row: tf(row) if cf(row) is True else of(row))
        if name in ("isempty", "isnotempty", "isnull", "isnotnull"):
            self._arity(node, args, 1, 1)
            get = args[0].fn
            empty_is_null = name in ("isempty", "isnotempty")

            def check(row: Row) -> bool:
                value = get(row)
                missing = value is None or (empty_is_null and value == "")
                return missing if name in ("isempty", "isnull") else not missing

            return Typed(BOOL, check)
        if name in ("tolower", "toupper"):
            self._arity(node, args, 1, 1)
            get, upper = args[0].fn, name == "toupper"
            return Typed(
                STRING, lambda row: to_text(get(row)).upper() if upper else to_text(get(row)).lower(), args[0].name
            )
        if name == "strlen":
            self._arity(node, args, 1, 1)
            get = args[0].fn
            return Typed(LONG, lambda row: len(to_text(get(row))))
        # strcat
        self._arity(node, args, 1, 64)
        fns = [arg.fn for arg in args]
        return Typed(STRING, lambda row: "".join(to_text(fn(row)) for fn in fns))


def _token_at(pos: int, text: str) -> Token:
    return Token("IDENT", text, pos, pos + len(text))


def _negate(value: bool | None, negate: bool) -> bool | None:
    return None if value is None else (not value if negate else value)


def _logic(op: str, lf: Fn, rf: Fn) -> Fn:
    def logic(row: Row) -> bool | None:
        a = lf(row)
        if op == "and" and a is False:
            return False
        if op == "or" and a is True:
            return True
        b = rf(row)
        if op == "and":
            return False if b is False else (None if a is None or b is None else True)
        return True if b is True else (None if a is None or b is None else False)

    return logic


def _comparison(op: str, lf: Fn, rf: Fn, fold: bool = False) -> Fn:
    if op in ("==", "!="):
        negate = op == "!="
        return lambda row: _negate(_equal(lf(row), rf(row), fold=fold), negate)
    tests = {"<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0}
    test = tests[op]

    def compare(row: Row) -> bool | None:
        order = _order(lf(row), rf(row))
        return None if order is None else test(order)

    return compare


# --------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class Aggregate:
    name: str
    type: str
    fn: Callable[[list[Row]], Any]


def compile_aggregate(compiler: ExpressionCompiler, node: Any, alias: str | None) -> Aggregate:
    if not isinstance(node, Call) or node.name not in AGGREGATES:
        if isinstance(node, Call) and node.name not in SCALAR_FUNCTIONS:
            raise unsupported(f"The aggregation function '{node.name}()'", _token_at(node.pos, node.name))
        raise semantic(
            "'summarize' operator: expected an aggregation function such as count(), countif(), dcount(), "
            "sum(), avg(), min(), max() or make_set()",
            getattr(node, "pos", None),
        )
    name = node.name
    args = [compiler.compile(arg) for arg in node.args]
    expected = {"count": 0, "countif": 1}.get(name, 1)
    if len(args) != expected and not (name == "dcount" and len(args) == 2):
        raise semantic(f"'{name}' expects {expected} argument(s), got {len(args)}", node.pos, name)
    if name == "count":
        return Aggregate(alias or "count_", LONG, len)
    arg = args[0]
    get = arg.fn
    default = f"{'set' if name == 'make_set' else name}_{arg.name or ''}"
    if name == "countif":
        if arg.type not in (BOOL, DYNAMIC):
            raise semantic(f"'countif' expects a bool predicate, not {arg.type}", node.pos, name)
        return Aggregate(alias or "countif_", LONG, lambda rows: sum(1 for row in rows if get(row) is True))

    def values(rows: list[Row]) -> list[Any]:
        return [v for v in (get(row) for row in rows) if v is not None]

    if name == "dcount":
        return Aggregate(alias or default, LONG, lambda rows: len({_hashable(v) for v in values(rows)}))
    if name == "make_set":

        def make_set(rows: list[Row]) -> list[Any]:
            seen: dict[Any, Any] = {}
            for value in values(rows):
                seen.setdefault(_hashable(value), value)
            return list(seen.values())

        return Aggregate(alias or default, DYNAMIC, make_set)
    if name in ("sum", "avg"):
        if arg.type not in (*NUMERIC, DYNAMIC):
            raise semantic(f"'{name}' expects a number, not {arg.type}", node.pos, name)
        if name == "sum":
            kind = REAL if arg.type in (REAL, DYNAMIC) else LONG
            return Aggregate(alias or default, kind, lambda rows: sum(values(rows)))
        return Aggregate(alias or default, REAL, lambda rows: (sum(vs) / len(vs)) if (vs := values(rows)) else None)
    # min / max ignore nulls and, for strings, empty values
    pick = min if name == "min" else max

    def extreme(rows: list[Row]) -> Any:
        present = [v for v in values(rows) if v != ""]
        try:
            return pick(present) if present else None
        except TypeError:
            return pick(present, key=to_text)

    return Aggregate(alias or default, arg.type, extreme)


# --------------------------------------------------------------------------- pipeline

Stage = Callable[[list[Row]], list[Row]]


def _add_column(schema: Schema, name: str, kind: str, pos: int, operator: str) -> None:
    if name in schema:
        raise semantic(f"'{operator}' operator: duplicate column name '{name}'", pos, name)
    schema[name] = kind


def _named_columns(compiler: ExpressionCompiler, items: Iterable[Named]) -> list[tuple[str, Typed]]:
    out: list[tuple[str, Typed]] = []
    counter = 0
    for item in items:
        typed = compiler.compile(item.expr)
        name = item.name or typed.name
        if name is None:
            counter += 1
            name = f"Column{counter}"
        out.append((name, typed))
    return out


def compile_operator(op: Operator, schema: Schema, now: datetime) -> tuple[Schema, Stage]:
    compiler = ExpressionCompiler(schema, op.name, now)
    if op.name == "where":
        predicate = compiler.boolean(op.predicate).fn
        return schema, lambda rows: [row for row in rows if predicate(row) is True]
    if op.name == "project":
        columns = _named_columns(compiler, op.items)
        out: Schema = {}
        for name, typed in columns:
            _add_column(out, name, typed.type, op.pos, "project")
        return out, lambda rows: [{name: typed.fn(row) for name, typed in columns} for row in rows]
    if op.name == "extend":
        out = dict(schema)
        steps: list[tuple[str, Fn]] = []
        counter = 0
        for item in op.items:
            typed = ExpressionCompiler(out, "extend", now).compile(item.expr)
            name = item.name or typed.name
            if name is None:
                counter += 1
                name = f"Column{counter}"
            out[name] = typed.type
            steps.append((name, typed.fn))

        def extend(rows: list[Row]) -> list[Row]:
            result = []
            for row in rows:
                new = dict(row)
                for name, fn in steps:
                    new[name] = fn(new)
                result.append(new)
            return result

        return out, extend
    if op.name == "summarize":
        return _summarize(op, compiler)
    if op.name == "count":
        return {"Count": LONG}, lambda rows: [{"Count": len(rows)}]
    if op.name == "distinct":
        names = list(schema) if op.star else []
        if not op.star:
            for item in op.items:
                if not isinstance(item.expr, Column):
                    raise semantic("'distinct' operator: expected column names", getattr(item.expr, "pos", op.pos))
                compiler.compile(item.expr)
                names.append(item.expr.name)
        out = {name: schema[name] for name in names}

        def distinct(rows: list[Row]) -> list[Row]:
            seen: dict[tuple[Any, ...], Row] = {}
            for row in rows:
                key = tuple(_hashable(row.get(name)) for name in names)
                seen.setdefault(key, {name: row.get(name) for name in names})
            return list(seen.values())

        return out, distinct
    if op.name == "take":
        count = op.count or 0
        return schema, lambda rows: rows[:count]
    # order / top
    keys = [(compiler.compile(key.expr).fn, key.descending, key.nulls_first) for key in op.sort]
    limit = op.count
    return schema, lambda rows: _sorted(rows, keys)[:limit] if limit is not None else _sorted(rows, keys)


def _sorted(rows: list[Row], keys: list[tuple[Fn, bool, bool]]) -> list[Row]:
    def compare(r1: Row, r2: Row) -> int:
        for fn, descending, nulls_first in keys:
            a, b = fn(r1), fn(r2)
            if a is None or b is None:
                if a is None and b is None:
                    continue
                return (-1 if nulls_first else 1) * (1 if a is None else -1)
            order = _order(a, b)
            if order is None:
                order = (to_text(a) > to_text(b)) - (to_text(a) < to_text(b))
            if order:
                return -order if descending else order
        return 0

    return sorted(rows, key=cmp_to_key(compare))


def _summarize(op: Operator, compiler: ExpressionCompiler) -> tuple[Schema, Stage]:
    by = _named_columns(compiler, op.by)
    aggregates = [compile_aggregate(compiler, item.expr, item.name) for item in op.items]
    out: Schema = {}
    for name, typed in by:
        _add_column(out, name, typed.type, op.pos, "summarize")
    for aggregate in aggregates:
        _add_column(out, aggregate.name, aggregate.type, op.pos, "summarize")

    def summarize(rows: list[Row]) -> list[Row]:
        groups: dict[tuple[Any, ...], tuple[list[Any], list[Row]]] = {}
        for row in rows:
            values = [typed.fn(row) for _, typed in by]
            key = tuple(_hashable(v) for v in values)
            groups.setdefault(key, (values, []))[1].append(row)
        if not by and not groups:
            groups[()] = ([], [])  # a summarize without `by` always answers one row
        result = []
        for values, members in groups.values():
            record: Row = {name: value for (name, _), value in zip(by, values, strict=True)}
            for aggregate in aggregates:
                record[aggregate.name] = aggregate.fn(members)
            result.append(record)
        return result

    return out, summarize


def compile_query(query: Query, schema: Schema, now: datetime) -> tuple[Schema, list[Stage]]:
    """Type-check every stage; raises KqlError before any data is touched."""
    stages = []
    for op in query.operators:
        schema, stage = compile_operator(op, schema, now)
        stages.append(stage)
    return schema, stages


def run_stages(stages: list[Stage], rows: list[Row]) -> list[Row]:
    for stage in stages:
        rows = stage(rows)
    return rows


def render_value(kind: str, value: Any) -> Any:
    """A value as the query API writes it in `rows`."""
    if kind == STRING:
        return to_text(value)
    if value is None:
        return None
    if kind == DATETIME:
        return format_datetime(value) if isinstance(value, datetime) else to_text(value)
    if kind == TIMESPAN:
        return format_timespan(value) if isinstance(value, timedelta) else to_text(value)
    if kind == DYNAMIC:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if kind == REAL:
        return float(value)
    if kind in (INT, LONG):
        return int(value)
    if kind == GUID:
        return str(value)
    return value
