"""`make lint` for infra/: every Bicep file parses (pycep-parser), and checkov finds no failed check.

checkov runs from its own virtualenv (infra/requirements-lint.txt): it pins packaging<24, which the
project's pytest cannot run with. The run must also have parsed every file (checkov skips a file it
cannot parse and would report zero failures for it), and every skip must carry a reason.

    python infra/lint.py --checkov .venv/infra-lint/bin/checkov
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
MIN_REASON = 20  # characters: "checkov:skip=ID" alone, or a token reason, is not a reason


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_all() -> list[str]:
    from pycep import BicepParser

    parser = BicepParser()
    problems = []
    for path in bicep_files():
        try:
            parser.parse(file_path=path)
        except Exception as exc:  # lark's errors carry the line and column
            problems.append(f"{path.relative_to(INFRA.parent)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return problems


def run_checkov(checkov: str) -> tuple[dict, list[str]]:
    """Every framework checkov applies to infra/ (bicep, secrets, ...); the bicep report must be there."""
    cmd = [checkov, "-d", str(INFRA), "--skip-download", "--output", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 (our own command)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {}, [f"checkov produced no JSON report (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"]
    reports = report if isinstance(report, list) else [report]
    bicep = next((r for r in reports if r.get("check_type") == "bicep"), None)
    problems = [] if bicep else ["checkov reported no bicep results"]
    for one in reports:
        summary, results = one.get("summary", {}), one.get("results", {})
        if summary.get("parsing_errors"):
            problems.append(f"checkov could not parse: {results.get('parsing_errors')}")
        for check in results.get("failed_checks", []):
            where = f"{check['resource']} ({check['file_path']})"
            problems.append(f"FAILED {check['check_id']} {check['check_name']}: {where}")
        for check in results.get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            if reason == "No comment provided" or len(reason.strip()) < MIN_REASON:
                where = f"{check['resource']} ({check['file_path']})"
                problems.append(f"skip without a reason: {check['check_id']} on {where}")
    return bicep or {}, problems


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--checkov", default=None, help="checkov executable; omitted: parse only")
    opts = args.parse_args()
    problems = parse_all()
    print(f"bicep: parsed {len(bicep_files())} file(s) with pycep-parser")
    if opts.checkov:
        report, checkov_problems = run_checkov(opts.checkov)
        problems += checkov_problems
        if report:
            s = report["summary"]
            print(
                f"checkov {s['checkov_version']}: passed {s['passed']}, failed {s['failed']}, "
                f"skipped {s['skipped']}, parsing errors {s['parsing_errors']}, resources {s['resource_count']}"
            )
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
