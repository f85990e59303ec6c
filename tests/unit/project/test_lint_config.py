"""make lint's static checks stay honest: every suppression says which rule and why, and no Python
code is left outside bandit's scan.

A bare `# nosec` silences every bandit rule on its line and a bare `# type: ignore` every mypy error,
including ones added later; a new top-level package missing from BANDIT_PATHS would never be scanned.
"""

from __future__ import annotations

import io
import re
import tokenize
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
NOT_SCANNED = {"tests", ".venv", ".devhost", ".git"}

NOSEC = re.compile(r"#\s*nosec\b")
# `# nosec B608  # why`: rule ids, then the reason after its own `#` (bandit reads every word before a
# second `#` as a rule name).
REASONED_NOSEC = re.compile(r"#\s*nosec\s+B\d{3}(?:\s*,\s*B\d{3})*\s+#\s*\S.{3,}")
TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore\b")
REASONED_TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore\[[a-z-]+(?:\s*,\s*[a-z-]+)*\]\s+#\s*\S.{3,}")


def bandit_paths() -> list[str]:
    line = next(li for li in (ROOT / "Makefile").read_text().splitlines() if li.startswith("BANDIT_PATHS :="))
    return line.split(":=", 1)[1].split()


def mypy_paths() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]


def python_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = ROOT / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def comments(path: Path) -> list[tuple[int, str]]:
    """The file's comments (real ones: a `# nosec` inside a string is not a suppression)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT]


def unreasoned(paths: list[str], marker: re.Pattern[str], reasoned: re.Pattern[str]) -> list[str]:
    found = []
    for path in python_files(paths):
        for line, text in comments(path):
            if marker.search(text) and not reasoned.search(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    return found


def test_every_nosec_names_its_rule_and_says_why() -> None:
    assert unreasoned(bandit_paths(), NOSEC, REASONED_NOSEC) == []


def test_every_type_ignore_in_the_checked_code_names_its_code_and_says_why() -> None:
    assert unreasoned(mypy_paths(), TYPE_IGNORE, REASONED_TYPE_IGNORE) == []


def test_the_patterns_tell_a_reasoned_suppression_from_a_bare_one() -> None:
    assert REASONED_NOSEC.search("# nosec B608  # column names are constants")
    assert not REASONED_NOSEC.search("# nosec B608")
    assert not REASONED_NOSEC.search("# nosec")
    assert not REASONED_NOSEC.search("# nosec B608 - column names are constants")  # bandit would parse the words
    assert REASONED_TYPE_IGNORE.search("# type: ignore[attr-defined]  # a marker read by getattr")
    assert not REASONED_TYPE_IGNORE.search("# type: ignore[attr-defined]")
    assert not REASONED_TYPE_IGNORE.search("# type: ignore  # because")


def test_bandit_scans_every_python_package_but_the_tests() -> None:
    scanned = set(bandit_paths())
    with_code = {
        p.name
        for p in ROOT.iterdir()
        if p.name not in NOT_SCANNED and ((p.is_file() and p.suffix == ".py") or (p.is_dir() and any(p.rglob("*.py"))))
    }
    assert with_code - scanned == set()
    assert [p for p in mypy_paths() if not any(p == s or p.startswith(f"{s}/") for s in scanned)] == []


def test_every_rule_bandit_skips_is_explained_next_to_the_skip() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.bandit]") :]
    section = section[: section.find("\n[", 1) if "\n[" in section[1:] else len(section)]
    explained = " ".join(line for line in section.splitlines() if line.lstrip().startswith("#"))
    skips = tomllib.loads(text)["tool"]["bandit"]["skips"]
    assert skips, "no skips: drop this test's premise"
    assert [rule for rule in skips if rule not in explained] == []
