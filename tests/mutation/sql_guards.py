"""Mutation testing of the SQL contract's guard clauses: reverse each one, run the contract tests.

    REACTOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python -m tests.mutation.sql_guards [--list] [--only 3,17] [--report FILE]

Each guard of sql/schema.sql is reversed on its own, wrapped in `not (...)`; the mutant is written
to a temporary directory (never into the repository) and tests/contract runs against it through
REACTOR_TEST_SCHEMA_FILE (tests/support/schema.py): the template database is built by pasting the
mutant, as a new project pastes `reactor sql`. A mutant is killed when a contract test fails (the
run stops at the first failure, `-x`) or the run times out, and survives when they all pass. A
baseline run against the unchanged file must pass first.

Deselected for every run: tests/contract/test_schema.py and tests/contract/test_migrations.py.
They check the files in sql/ themselves (schema.sql against the migrations, the migrations and
`reactor sql` pasted into fresh databases), not the contract under test, so no mutant can fail them.
Nor can the tests of tests/contract/test_store.py on the in-memory store (`-k "not memory"`).

What counts as a guard (find_guards), in the code of sql/schema.sql, function bodies and the SQL
they build in format() strings included, comments left out:

- where: each top-level `and` operand of a `where` clause (a `between ... and` stays whole; a
  clause with a top-level `or` is one guard), `filter (where ...)` and joins included. Not the
  `where` of a partial index, which chooses the rows an index covers, never the rows a statement
  touches.
- if: the condition of each PL/pgSQL `if` and `elsif` (not `create ... if not exists`).
- case: each `when` condition of a searched case (`case when ...`): the item checks of
  reactor.batch_items, and the decisions an update makes per row, such as reactor_fail's
  `i.permanent or j.attempts >= j.max_attempts` (a simple case, `case p_kind when 'lease'`,
  compares values and has none).
- check: the expression of each CHECK constraint.
- policy: the `using (...)` and `with check (...)` expressions of a row-level security policy.
- trigger: the `when (...)` condition of a trigger.

A reversal is valid SQL wherever the guard stands; under SQL's three-valued logic `not (null)` is
still null, so a guard that is null for a row stays false for it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "sql" / "schema.sql"
CONTRACT_TESTS = ROOT / "tests" / "contract"
DESELECTED = ("tests/contract/test_schema.py", "tests/contract/test_migrations.py")
# tests/contract/test_store.py runs each test on the real functions and on the in-memory store; the
# in-memory half runs no SQL, so no mutant can fail it.
IN_MEMORY = "memory"
SCHEMA_FILE_VARIABLE = "REACTOR_TEST_SCHEMA_FILE"  # tests/support/schema.py
DATABASE_VARIABLE = "REACTOR_TEST_DATABASE_URL"

STOP = "\x00"  # in a shadow: a position that is not code of the region being read
_WORD = r"(?<![\w$])"
_WHERE_ENDS = re.compile(
    _WORD + r"(order\s+by|group\s+by|limit|offset|for\s+(update|share|no\s+key|key)|returning|having|"
    r"window|union|except|intersect|then|loop|on\s+conflict|end)\b",
    re.I,
)
_STATEMENT_START = re.compile(r"(;|begin\b|then\b|else\b|loop\b|\x00)\s*$", re.I)
_CODE_STRING = re.compile(r"\s*(create|alter|drop|select|update|delete|insert|with|revoke|grant)\b", re.I)
_CONTEXT = re.compile(
    r"^create\s+(?:or\s+replace\s+)?function\s+([\w.]+)|^create\s+table\s+(?:if\s+not\s+exists\s+)?([\w.]+)"
    r"|^(do)\s+\$\$",
    re.I | re.M,
)


@dataclass(frozen=True)
class Guard:
    id: int
    kind: str
    line: int
    where: str  # the function, table or block it stands in
    start: int
    end: int
    text: str

    def label(self) -> str:
        return f"#{self.id} {self.kind} {self.where}:{self.line}"


# ---- Reading sql/schema.sql: shadows ------------------------------------------------------------
#
# A shadow is a string as long as the file in which only the code of one region is readable:
# comments are blanks, string literals inside it are underscores (one opaque token), and whatever
# lies outside the region, dollar-quote delimiters included, is STOP. Positions in a shadow are
# positions in the file. Region 0 is the file's code, dollar-quoted bodies included (they are
# code); each string literal that holds a SQL statement (as format() and execute take them) is a
# region of its own, in which a literal is written ''like this''.


def _dollar_tag(sql: str, i: int) -> str | None:
    match = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$").match(sql, i)
    if match is None or (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
        return None
    return match.group(0)


def _shadows(sql: str) -> list[str]:
    """The shadows of the top-level code and of each string literal holding SQL."""
    top = list(sql)
    strings: list[tuple[int, int]] = []  # contents of the top-level code's literals, quotes excluded
    i, n = 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            top[i:j] = " " * (j - i)
            i = j
        elif sql.startswith("/*", i):
            j = sql.index("*/", i) + 2
            top[i:j] = [c if c == "\n" else " " for c in sql[i:j]]
            i = j
        elif sql[i] == "'":
            j = i + 1
            while True:
                j = sql.index("'", j)
                if sql.startswith("''", j):
                    j += 2
                    continue
                break
            top[i : j + 1] = "_" * (j + 1 - i)
            strings.append((i + 1, j))
            i = j + 1
        elif sql[i] == "$" and (tag := _dollar_tag(sql, i)):
            # Opening or closing, a delimiter ends whatever was being read: the body is code.
            top[i : i + len(tag)] = STOP * len(tag)
            i += len(tag)
        else:
            i += 1
    shadows = ["".join(top)]
    group: list[tuple[int, int]] = []  # literals that make one string: 'a '  'b' is 'a b'
    for start, end in [*strings, (n, n)]:
        if group:
            gap = sql[group[-1][1] + 1 : start - 1]
            if start < n and gap.strip() == "" and "\n" in gap:
                group.append((start, end))
                continue
            if _CODE_STRING.match(sql, group[0][0]):
                shadows.append(_string_shadow(sql, group))
        group = [(start, end)]
    return shadows


def _string_shadow(sql: str, literals: list[tuple[int, int]]) -> str:
    shadow = [STOP] * len(sql)
    shadow[literals[0][0] : literals[-1][1]] = " " * (literals[-1][1] - literals[0][0])
    for start, end in literals:
        i = start
        while i < end:
            if sql.startswith("''", i):
                j = sql.index("''", i + 2)
                shadow[i : j + 2] = "_" * (j + 2 - i)
                i = j + 2
            else:
                shadow[i] = sql[i]
                i += 1
    return "".join(shadow)


# ---- Reading sql/schema.sql: expressions --------------------------------------------------------


def _expression_end(shadow: str, i: int, stops: re.Pattern[str] | None) -> int:
    """Where an expression starting at i ends: before a `)` closing an outer parenthesis, a `,` or
    `;` at its own level, a STOP, or (at its own level, outside any case) a match of `stops`."""
    depth = 0
    cases = 0
    while i < len(shadow):
        c = shadow[i]
        if c == STOP or (depth == 0 and c in ",;"):
            break
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (c.isalpha() and (i == 0 or not _is_word(shadow[i - 1]))):
            if re.compile(r"case\b", re.I).match(shadow, i):
                cases += 1
            elif cases and re.compile(r"end\b", re.I).match(shadow, i):
                cases -= 1
            elif cases == 0 and stops is not None and stops.match(shadow, i):
                break
        i += 1
    return i


def _is_word(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _trim(shadow: str, start: int, end: int) -> tuple[int, int]:
    while start < end and shadow[start].isspace():
        start += 1
    while end > start and shadow[end - 1].isspace():
        end -= 1
    return start, end


def _top_level_words(shadow: str, start: int, end: int) -> list[tuple[int, str]]:
    """The words of shadow[start:end] outside any parenthesis, with their positions."""
    found, depth = [], 0
    for match in re.compile(r"[()]|[A-Za-z_][\w$]*").finditer(shadow, start, end):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and not _is_word(shadow[match.start() - 1]):
            found.append((match.start(), token.lower()))
    return found


def _conjuncts(shadow: str, start: int, end: int) -> list[tuple[int, int]]:
    """The top-level `and` operands of a condition; the whole of it if it has a top-level `or`."""
    words = _top_level_words(shadow, start, end)
    if any(word == "or" for _, word in words):
        return [(start, end)]
    parts, begin, between = [], start, False
    for position, word in words:
        if word == "between":
            between = True
        elif word == "and" and between:
            between = False
        elif word == "and":
            parts.append(_trim(shadow, begin, position))
            begin = position + 3
    parts.append(_trim(shadow, begin, end))
    return parts


def _paren_contents(shadow: str, open_paren: int) -> tuple[int, int]:
    end = _expression_end(shadow, open_paren + 1, None)
    return _trim(shadow, open_paren + 1, end)


# ---- Finding the guards -------------------------------------------------------------------------


def _wheres(shadow: str) -> list[tuple[str, int, int]]:
    found = []
    for match in re.compile(_WORD + r"where\b", re.I).finditer(shadow):
        if re.match(r"\s*create\s+(unique\s+)?index\b", _statement_head(shadow, match.start()), re.I):
            continue  # a partial index's predicate
        start = match.end()
        end = _expression_end(shadow, start, _WHERE_ENDS)
        found += [("where", s, e) for s, e in _conjuncts(shadow, *_trim(shadow, start, end))]
    return found


def _ifs(shadow: str) -> list[tuple[str, int, int]]:
    found = []
    for match in re.compile(_WORD + r"(if|elsif)\b", re.I).finditer(shadow):
        if not _STATEMENT_START.search(shadow, 0, match.start()):
            continue  # `end if`, `create table if not exists`, ...
        start = match.end()
        end = _expression_end(shadow, start, re.compile(r"then\b", re.I))
        if re.compile(r"then\b", re.I).match(shadow, end):
            found.append(("if", *_trim(shadow, start, end)))
    return found


def _cases(shadow: str) -> list[tuple[str, int, int]]:
    found = []
    then = re.compile(r"then\b", re.I)
    branch = re.compile(_WORD + r"(when|else|end)\b", re.I)
    for match in re.compile(_WORD + r"case\s+when\b", re.I).finditer(shadow):
        i = match.start() + 4
        while (at := branch.search(shadow, i)) and at.group(1).lower() == "when":
            end = _expression_end(shadow, at.end(), then)
            found.append(("case", *_trim(shadow, at.end(), end)))
            i = _expression_end(shadow, end + 4, branch)
    return found


def _statement_head(shadow: str, position: int) -> str:
    """The code from the start of the statement holding position up to it."""
    start = max(shadow.rfind(";", 0, position), shadow.rfind(STOP, 0, position)) + 1
    return shadow[start:position]


def _parenthesised(shadow: str, pattern: str, kind: str, statement: str = "") -> list[tuple[str, int, int]]:
    """The parenthesised expression after each match of pattern, in statements starting so."""
    found = []
    for match in re.compile(_WORD + pattern + r"\s*\(", re.I).finditer(shadow):
        if re.match(r"\s*" + statement, _statement_head(shadow, match.start()), re.I):
            found.append((kind, *_paren_contents(shadow, match.end() - 1)))
    return found


def _contexts(sql: str) -> list[tuple[int, str]]:
    found = []
    for match in _CONTEXT.finditer(sql):
        name = match.group(1) or match.group(2)
        label = name if name else f"do block at line {sql.count(chr(10), 0, match.start()) + 1}"
        found.append((match.start(), label.lower()))
    return found


def _context(contexts: list[tuple[int, str]], position: int) -> str:
    label = "top level"
    for start, name in contexts:
        if start > position:
            break
        label = name
    return label


def find_guards(sql: str) -> list[Guard]:
    """The guard clauses of a schema file, in the order they appear, numbered from 1."""
    contexts = _contexts(sql)
    spans: set[tuple[str, int, int]] = set()
    for shadow in _shadows(sql):
        spans.update(_wheres(shadow))
        spans.update(_ifs(shadow))
        spans.update(_cases(shadow))
        spans.update(_parenthesised(shadow, r"(?<!with\s)check", "check"))
        spans.update(_parenthesised(shadow, r"(using|with\s+check)", "policy", r"create\s+policy\b"))
        spans.update(_parenthesised(shadow, r"when", "trigger", r"create\s+(or\s+replace\s+)?trigger\b"))
    ordered = sorted(spans, key=lambda span: (span[1], span[2]))
    return [
        Guard(
            id=number,
            kind=kind,
            line=sql.count("\n", 0, start) + 1,
            where=_context(contexts, start),
            start=start,
            end=end,
            text=sql[start:end],
        )
        for number, (kind, start, end) in enumerate(ordered, 1)
    ]


def mutate(sql: str, guard: Guard) -> str:
    """The schema with this one guard reversed."""
    return sql[: guard.start] + "not (" + sql[guard.start : guard.end] + ")" + sql[guard.end :]


# ---- Running the contract tests against a mutant ------------------------------------------------


@dataclass
class Outcome:
    guard: Guard | None
    killed: bool
    by: str  # the first failing test, "timeout", or "" for a survivor
    seconds: float
    output: str
    in_setup: bool = False  # the test errored in a fixture: the template, built from the mutant, say

    def cause(self) -> str:
        return self.by + (" (in setup)" if self.in_setup else "")


def _test_files(guard: Guard | None, killers: dict[str, Counter[str]]) -> list[str]:
    """The contract test files, those likeliest to kill this guard's mutant first (only speed
    depends on it): files that killed mutants of the same function, then files naming it."""
    files = sorted(str(p.relative_to(ROOT)) for p in CONTRACT_TESTS.glob("test_*.py"))
    files = [f for f in files if f not in DESELECTED]
    if guard is None:
        return files
    short = guard.where.split(".")[-1]
    seen = Counter(test.split("::")[0] for test in killers.get(guard.where, Counter()).elements())
    return sorted(files, key=lambda f: (-seen[f], -(ROOT / f).read_text().count(short)))


def run_mutant(sql: str, guard: Guard, killers: dict[str, Counter[str]], timeout: float) -> Outcome:
    """Run the contract tests against the guard's mutant. The tests that killed other mutants of
    the same function run first, alone: most mutants fall to them, sparing a run of every test."""
    mutant = mutate(sql, guard)
    likely = [test for test, _ in killers.get(guard.where, Counter()).most_common(3)]
    spent = 0.0
    if likely:
        outcome = run_contract_tests(mutant, guard, likely, timeout)
        if outcome.killed:
            return outcome
        spent = outcome.seconds
    outcome = run_contract_tests(mutant, guard, _test_files(guard, killers), timeout)
    outcome.seconds += spent
    return outcome


def _first_failure(output: str) -> tuple[str, bool]:
    """The first failing test's node id, and whether it failed in a fixture (pytest's ERROR)."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1], line.startswith("ERROR ")
    return "a failure pytest did not name", False


def run_contract_tests(schema_text: str, guard: Guard | None, files: list[str], timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="reactor-sql-guards-") as scratch:
        path = Path(scratch) / "schema.sql"
        path.write_text(schema_text)
        env = {**os.environ, SCHEMA_FILE_VARIABLE: str(path)}
        command = [sys.executable, "-m", "pytest", *files, "-x", "-q", "-p", "no:cacheprovider"]
        command += [arg for f in DESELECTED for arg in ("--deselect", f)]
        command += ["-k", f"not {IN_MEMORY}"]
        began = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT first: pytest stops the test and its teardown drops the test's databases.
            process.send_signal(signal.SIGINT)
            try:
                output, _ = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
                print(f"  (pytest {process.pid} killed: its databases may be left on the server)")
            return Outcome(guard, True, "timeout", time.monotonic() - began, output)
        seconds = time.monotonic() - began
    if process.returncode == 0:
        return Outcome(guard, False, "", seconds, output)
    if process.returncode != 1:  # not a test failing: pytest was interrupted or could not run
        raise RuntimeError(f"pytest exited with {process.returncode}:\n{output[-3000:]}")
    by, in_setup = _first_failure(output)
    return Outcome(guard, True, by, seconds, output, in_setup)


# ---- The report ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| # | kind | in | line | guard | result | first failing test |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        g = o.guard
        assert g is not None
        result = "killed" if o.killed else "**survived**"
        lines.append(
            f"| {g.id} | {g.kind} | {g.where} | {g.line} | `{_cell(g.text)}` | {result} | {_cell(o.cause())} |"
        )
    return "\n".join(lines)


def summary(outcomes: list[Outcome], total: int, seconds: float) -> str:
    killed = sum(o.killed for o in outcomes)
    ran = len(outcomes)
    score = 100 * killed / ran if ran else 0.0
    scope = "all" if ran == total else f"{ran} of {total}"
    return (
        f"Guards: {total} ({scope} run); killed {killed}, survived {ran - killed}: "
        f"{score:.1f} % in {seconds / 60:.1f} min."
    )


def markdown(outcomes: list[Outcome], total: int, seconds: float) -> str:
    return (
        "Command: `REACTOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres "
        "python -m tests.mutation.sql_guards`\n\n"
        f"{summary(outcomes, total, seconds)}\n\n{table(outcomes)}\n"
    )


# ---- Command line -------------------------------------------------------------------------------


def _ids(text: str) -> set[int]:
    ids: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation.sql_guards", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", type=_ids, help="guard ids to run, as 3 or 3,17 or 10-20")
    parser.add_argument("--list", action="store_true", help="list the guards and run nothing")
    parser.add_argument("--report", type=Path, help="also write the results to this markdown file")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds before a mutant's run is killed (default: 3 times the baseline's)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the run against the unchanged file")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output for survivors")
    args = parser.parse_args(argv)

    sql = SCHEMA.read_text()
    guards = find_guards(sql)
    if args.list:
        for g in guards:
            print(f"{g.id:4} {g.kind:8} {g.where:34} {g.line:5}  {_cell(g.text)}")
        print(f"{len(guards)} guards")
        return 0
    if not os.environ.get(DATABASE_VARIABLE):
        print(
            f"note: {DATABASE_VARIABLE} is not set, so each run starts an embedded Postgres", file=sys.stderr
        )
    chosen = [g for g in guards if args.only is None or g.id in args.only]
    began = time.monotonic()
    timeout = args.timeout or 600.0
    if not args.no_baseline:
        baseline = run_contract_tests(sql, None, _test_files(None, {}), timeout)
        timeout = args.timeout or max(120.0, 3 * baseline.seconds)
        print(
            f"baseline (unchanged sql/schema.sql): {'FAILED' if baseline.killed else 'passed'}"
            f" in {baseline.seconds:.0f} s"
        )
        if baseline.killed:
            print(baseline.output[-3000:])
            return 2
    killers: dict[str, Counter[str]] = {}  # per function: the tests that killed its mutants
    outcomes = []
    for g in chosen:
        outcome = run_mutant(sql, g, killers, timeout)
        outcomes.append(outcome)
        if outcome.killed and outcome.by != "timeout":
            killers.setdefault(g.where, Counter())[outcome.by] += 1
        verdict = f"killed by {outcome.cause()}" if outcome.killed else "SURVIVED"
        print(f"{g.label():48} {verdict} ({outcome.seconds:.0f} s)  {_cell(g.text)[:60]}", flush=True)
        if not outcome.killed and args.verbose:
            print(outcome.output[-1500:])
    seconds = time.monotonic() - began
    print()
    print(table(outcomes))
    print()
    print(summary(outcomes, len(guards), seconds))
    if args.report:
        args.report.write_text(markdown(outcomes, len(guards), seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
