"""The emulator's KQL subset: valid KQL under a real grammar, and Kusto's semantics where they bite.

Runs in-process (no emulator): parser, type checker and evaluator over hand-made rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from hypothesis import given, settings
from hypothesis import strategies as st
from kusto_query_language_parser.parse_tools.KqlLexer import KqlLexer
from kusto_query_language_parser.parse_tools.KqlParser import KqlParser

from emulators.loganalytics.kql_engine import compile_query, render_value, run_stages
from emulators.loganalytics.kql_syntax import KqlError, parse
from emulators.loganalytics.telemetry_tables import TABLES

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class _Collect(ErrorListener):
    def __init__(self) -> None:
        self.errors: list[str] = []

    def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any) -> None:
        self.errors.append(f"{line}:{column} {msg}")


def kql_grammar_errors(query: str) -> list[str]:
    """Syntax errors a real KQL grammar (kusto-query-language-parser's ANTLR grammar) reports."""
    listener = _Collect()
    lexer = KqlLexer(InputStream(query))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = KqlParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.top()
    return listener.errors


def documented_queries() -> list[str]:
    """The ```kql blocks of the Log Analytics section of docs/emulators.md."""
    text = (ROOT / "docs" / "emulators.md").read_text()
    section = text[text.index("## Log Analytics query") :]
    following = re.search(r"\n## ", section[3:])
    if following:
        section = section[: following.start() + 3]
    return re.findall(r"```kql\n(.*?)\n```", section, re.DOTALL)


def full_row(table: str, **values: Any) -> dict[str, Any]:
    row = {name: ("" if kind == "string" else None) for name, kind in TABLES[table].items()}
    row.update(values)
    return row


def run(query: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parsed = parse(query)
    table = parsed.table
    schema, stages = compile_query(parsed, dict(TABLES[table]), NOW)
    out = run_stages(stages, [full_row(table, **row) for row in rows])
    return [{name: render_value(kind, row.get(name)) for name, kind in schema.items()} for row in out]


def refused(query: str) -> KqlError:
    with pytest.raises(KqlError) as caught:
        parsed = parse(query)
        compile_query(parsed, dict(TABLES[parsed.table]), NOW)
    return caught.value


# --------------------------------------------------------------------------- valid KQL


def test_the_grammar_check_rejects_broken_kql() -> None:
    assert kql_grammar_errors("AppRequests | where") != []
    assert kql_grammar_errors("AppRequests | wher x == 1") != []
    assert kql_grammar_errors("AppRequests | where x == 1") == []


def test_documented_queries_are_valid_kql_and_run_here() -> None:
    queries = documented_queries()
    assert len(queries) >= 8
    for query in queries:
        assert kql_grammar_errors(query) == [], query
        parsed = parse(query)
        schema, stages = compile_query(parsed, dict(TABLES[parsed.table]), NOW)
        assert schema and run_stages(stages, []) is not None


_STRING_COLUMNS = ("AppRoleName", "Name", "ResultCode", "Url", "OperationName")
_STRING_OPERATORS = ("has", "!has", "contains", "!contains", "startswith", "endswith", "has_cs", "!startswith_cs")
_words = st.text(alphabet="abcxyz019.:-/", min_size=0, max_size=8)


def _string_literal(word: str) -> str:
    return '"' + word + '"'


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> str:
    column = draw(st.sampled_from(_STRING_COLUMNS))
    word = _string_literal(draw(_words))
    choices = [
        f"{column} {draw(st.sampled_from(['==', '!=', '=~', '!~']))} {word}",
        f"{column} {draw(st.sampled_from(_STRING_OPERATORS))} {word}",
        f"{column} {draw(st.sampled_from(['in', '!in', 'in~', '!in~']))} ({word}, {_string_literal(draw(_words))})",
        f"toint(ResultCode) {draw(st.sampled_from(['in', '!in']))} (401, {draw(st.integers(0, 599))})",
        f"DurationMs {draw(st.sampled_from(['<', '<=', '>', '>=']))} {draw(st.integers(0, 10_000))}",
        f"TimeGenerated between (ago({draw(st.integers(1, 48))}h) .. now())",
        f"TimeGenerated > datetime(2026-01-0{draw(st.integers(1, 9))}T00:00:00Z)",
        f"Success == {draw(st.sampled_from(['true', 'false']))}",
        f"isnotempty({column})",
    ]
    if depth < 2:
        left, right = draw(predicates(depth + 1)), draw(predicates(depth + 1))
        choices += [f"({left}) {draw(st.sampled_from(['and', 'or']))} ({right})", f"not({left})"]
    return draw(st.sampled_from(choices))


@st.composite
def queries(draw: st.DrawFn) -> str:
    stages = []
    for _ in range(draw(st.integers(0, 3))):
        stages.append(f"where {draw(predicates())}")
    tail = draw(
        st.sampled_from(
            [
                "",
                "summarize Failures = count()",
                "summarize n = count(), countif(Success) by AppRoleName",
                "summarize dcount(Name), min(TimeGenerated), max(DurationMs) by bin(TimeGenerated, 1h)",
                "count",
                "distinct AppRoleName, ResultCode",
                "project TimeGenerated, AppRoleName, Code = toint(ResultCode) | take 5",
                "extend Code = tostring(ResultCode) | order by TimeGenerated desc",
                "top 3 by DurationMs asc nulls first",
            ]
        )
    )
    if tail:
        stages.append(tail)
    return " | ".join(["AppRequests", *stages])


@settings(max_examples=150, deadline=None)
@given(queries())
def test_generated_subset_queries_are_valid_kql(query: str) -> None:
    assert kql_grammar_errors(query) == [], query
    parsed = parse(query)
    compile_query(parsed, dict(TABLES["AppRequests"]), NOW)


# --------------------------------------------------------------------------- semantics


def test_has_matches_whole_terms_case_insensitively() -> None:
    rows = [
        {"Target": "myapp.azurewebsites.net:443"},
        {"Target": "MYAPP.azurewebsites.net"},
        {"Target": "notmyapp.azurewebsites.net"},
        {"Target": "myapp.azurewebsites.network"},
    ]
    out = run('AppDependencies | where Target has "myapp.azurewebsites.net" | project Target', rows)
    assert [r["Target"] for r in out] == ["myapp.azurewebsites.net:443", "MYAPP.azurewebsites.net"]
    out = run('AppDependencies | where Target contains "myapp" | count', rows)
    assert out == [{"Count": 4}]


def test_equality_is_case_sensitive_and_tilde_operators_are_not() -> None:
    rows = [{"AppRoleName": "MyApp"}, {"AppRoleName": "myapp"}]
    assert run('AppRequests | where AppRoleName == "myapp" | count', rows) == [{"Count": 1}]
    assert run('AppRequests | where AppRoleName =~ "myapp" | count', rows) == [{"Count": 2}]
    assert run('AppRequests | where AppRoleName in ("MYAPP") | count', rows) == [{"Count": 0}]
    assert run('AppRequests | where AppRoleName in~ ("MYAPP") | count', rows) == [{"Count": 2}]
    assert run('AppRequests | where AppRoleName !in~ ("MYAPP") | count', rows) == [{"Count": 0}]


def test_comparing_a_string_column_with_numbers_is_a_semantic_error() -> None:
    error = refused("AppRequests | where ResultCode in (401, 403)")
    assert error.kind == "SemanticError" and "string" in error.message
    assert refused("AppRequests | where ResultCode == 401").kind == "SemanticError"
    assert refused('AppServiceHTTPLogs | where ScStatus == "401"').kind == "SemanticError"
    rows = [{"ResultCode": "401"}, {"ResultCode": "403"}, {"ResultCode": "200"}, {"ResultCode": "n/a"}]
    assert run("AppRequests | where toint(ResultCode) in (401, 403) | count", rows) == [{"Count": 2}]
    assert run("AppRequests | where toint(ResultCode) !in (401, 403) | count", rows) == [{"Count": 1}]


def test_unknown_columns_tables_and_functions_are_named() -> None:
    error = refused('AppRequests | where Target == "x"')
    assert error.kind == "SemanticError" and "'Target'" in error.message and error.pos == 20
    error = refused("AppRequests | summarize count() | where count_ > 0 | project Nope")
    assert "'Nope'" in error.message
    error = refused("AppRequests | where strcat_array(Name) == 1")
    assert error.kind == "Unsupported" and "strcat_array" in error.message
    assert refused("AppRequests | where count() > 1").kind == "SemanticError"
    assert refused("AppRequests | where Name").kind == "SemanticError"  # predicate must be bool


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("AppRequests | join (AppDependencies) on OperationId", "'join'"),
        ("AppRequests | project-away Name", "'project-away'"),
        ("AppRequests | mv-expand Properties", "'mv-expand'"),
        ("let x = 1; AppRequests", "'let'"),
        ("AppRequests | count; AppDependencies | count", "more than one statement"),
        ('AppRequests | where Name matches regex "a+"', "'matches'"),
        ('AppRequests | where Name has_any ("a", "b")', "'has_any'"),
        ("union AppRequests, AppDependencies", "'union'"),
    ],
)
def test_valid_kql_outside_the_subset_is_refused_by_name(query: str, named: str) -> None:
    assert kql_grammar_errors(query) == [], "the refusal must be about support, not syntax"
    error = refused(query)
    assert error.kind == "Unsupported" and named in error.message


def test_a_tabular_in_operand_is_refused() -> None:
    error = refused("AppRequests | where Name in (AppDependencies | distinct Name)")
    assert error.kind == "Unsupported" and "tabular" in error.message


def test_syntax_errors_point_at_the_offending_token() -> None:
    error = refused("AppRequests | where Name == ")
    assert error.kind == "SyntaxError" and error.token == "<end of query>"
    error = refused("AppRequests | where Name === 'x'")
    assert error.kind == "SyntaxError" and error.pos == 27
    assert refused('AppRequests | where Name == "open').kind == "SyntaxError"
    assert refused("AppRequests | where TimeGenerated > ago(3x)").kind == "SyntaxError"


def test_literals() -> None:
    rows = [{"Name": 'say "hi"', "Url": "C:\\admin", "TimeGenerated": NOW - timedelta(minutes=90)}]
    assert run(r'AppRequests | where Name == "say \"hi\"" | count', rows) == [{"Count": 1}]
    assert run("AppRequests | where Name == 'say \"hi\"' | count", rows) == [{"Count": 1}]
    assert run(r'AppRequests | where Name == @"say ""hi""" and Url == @"C:\admin" | count', rows) == [{"Count": 1}]
    assert run("AppRequests | where TimeGenerated < ago(1h) and TimeGenerated > ago(1.5h + 1m) | count", rows) == [
        {"Count": 1}
    ]
    assert run("AppRequests | where TimeGenerated == datetime(2026-01-01 10:30) | count", rows) == [{"Count": 1}]
    out = run("AppRequests | extend d = now() - TimeGenerated, half = 90m / 2 | project d, half", rows)
    assert out == [{"d": "01:30:00", "half": "00:45:00"}]


def test_null_and_empty_values_follow_kusto() -> None:
    rows = [{"DurationMs": 5.0, "Name": "a"}, {"DurationMs": None, "Name": ""}]
    assert run("AppRequests | where DurationMs > 1 or DurationMs <= 1 | count", rows) == [{"Count": 1}]
    assert run("AppRequests | where isnull(DurationMs) and isempty(Name) | count", rows) == [{"Count": 1}]
    assert run("AppRequests | where Success != true | count", rows) == [{"Count": 0}]  # null Success
    out = run("AppRequests | project Name, DurationMs", rows)
    assert out == [{"Name": "a", "DurationMs": 5.0}, {"Name": "", "DurationMs": None}]


def test_summarize_counts_groups_and_bins() -> None:
    base = NOW.replace(minute=0)
    rows = [
        {"AppRoleName": "a", "ResultCode": "401", "TimeGenerated": base + timedelta(minutes=5), "Success": False},
        {"AppRoleName": "a", "ResultCode": "200", "TimeGenerated": base + timedelta(minutes=65), "Success": True},
        {"AppRoleName": "b", "ResultCode": "403", "TimeGenerated": base + timedelta(minutes=70), "Success": True},
    ]
    out = run(
        'AppRequests | summarize n = count(), failures = countif(ResultCode startswith "4"), dcount(ResultCode)'
        " by AppRoleName | order by AppRoleName asc",
        rows,
    )
    assert out == [
        {"AppRoleName": "a", "n": 2, "failures": 1, "dcount_ResultCode": 2},
        {"AppRoleName": "b", "n": 1, "failures": 1, "dcount_ResultCode": 1},
    ]
    out = run("AppRequests | summarize count() by bin(TimeGenerated, 1h) | order by TimeGenerated asc", rows)
    assert out == [
        {"TimeGenerated": "2026-01-01T12:00:00Z", "count_": 1},
        {"TimeGenerated": "2026-01-01T13:00:00Z", "count_": 2},
    ]
    assert run("AppRequests | where false | summarize Failures = count()", rows) == [{"Failures": 0}]
    assert run("AppRequests | where false | summarize count() by AppRoleName", rows) == []
    out = run("AppRequests | summarize min(TimeGenerated), max(ResultCode), make_set(AppRoleName)", rows)
    assert out == [
        {"min_TimeGenerated": "2026-01-01T12:05:00Z", "max_ResultCode": "403", "set_AppRoleName": '["a","b"]'}
    ]


def test_order_take_top_distinct_project_extend() -> None:
    rows = [{"Name": "x", "DurationMs": 3.0}, {"Name": "y", "DurationMs": None}, {"Name": "x", "DurationMs": 7.0}]
    assert [r["DurationMs"] for r in run("AppRequests | order by DurationMs", rows)] == [7.0, 3.0, None]
    assert [r["DurationMs"] for r in run("AppRequests | order by DurationMs asc", rows)] == [None, 3.0, 7.0]
    assert [r["DurationMs"] for r in run("AppRequests | top 1 by DurationMs asc nulls last", rows)] == [3.0]
    assert len(run("AppRequests | take 2", rows)) == 2
    assert run("AppRequests | distinct Name | order by Name asc", rows) == [{"Name": "x"}, {"Name": "y"}]
    out = run(
        "AppRequests | where Name == 'x' | extend a = DurationMs * 2, b = a + 1 | project a, b, strlen(Name)", rows
    )
    assert out == [{"a": 6.0, "b": 7.0, "Column1": 1}, {"a": 14.0, "b": 15.0, "Column1": 1}]
    assert refused("AppRequests | project Name, Name").kind == "SemanticError"


def test_dynamic_member_access() -> None:
    identity = {"claim": {"oid": "11111111-1111-1111-1111-111111111111", "upn": "consumer"}}
    rows = [{"Identity": identity, "OperationName": "SecretGet"}, {"Identity": None, "OperationName": "SecretGet"}]
    out = run("AZKVAuditLogs | summarize Reads = count() by Caller = tostring(Identity.claim.oid)", rows)
    assert out == [{"Caller": "11111111-1111-1111-1111-111111111111", "Reads": 1}, {"Caller": "", "Reads": 1}]
    out = run('AZKVAuditLogs | where Identity["claim"].upn == "consumer" | project Identity.claim.upn', rows)
    assert out == [{"Identity_claim_upn": "consumer"}]
    assert refused("AZKVAuditLogs | where OperationName.x == 1").kind == "SemanticError"


def test_column_ifexists_reads_the_column_or_the_default() -> None:
    oid = "11111111-1111-1111-1111-111111111111"
    rows = [{"identity_claim_oid_g": oid}, {"identity_claim_oid_g": None}]
    query = (
        'AzureDiagnostics | project A = tostring(column_ifexists("identity_claim_oid_g", "none")),'
        ' B = column_ifexists("no_such_column_s", "none")'
    )
    assert run(query, rows) == [{"A": oid, "B": "none"}, {"A": "", "B": "none"}]
    assert refused('AzureDiagnostics | project column_ifexists(id_s, "")').kind == "SemanticError"
    assert refused('AzureDiagnostics | project column_ifexists("id_s")').kind == "SemanticError"


def test_guids_compare_without_case_but_strings_do_not() -> None:
    oid = "AAAAAAAA-1111-1111-1111-111111111111"
    rows = [{"identity_claim_oid_g": oid.lower(), "id_s": oid.lower()}]
    assert run(f'AzureDiagnostics | where identity_claim_oid_g == "{oid}" | count', rows) == [{"Count": 1}]
    assert run(f'AzureDiagnostics | where identity_claim_oid_g in ("{oid}") | count', rows) == [{"Count": 1}]
    assert run(f'AzureDiagnostics | where id_s == "{oid}" | count', rows) == [{"Count": 0}]
