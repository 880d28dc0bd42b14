"""tests/mutation/sql_guards.py still finds the guards of sql/schema.sql, and each mutant reverses
exactly its own guard (no database: the mutation run itself is too slow for the suite)."""

from __future__ import annotations

import pytest

from tests.mutation.sql_guards import SCHEMA, Guard, find_guards, mutate

SQL = SCHEMA.read_text()
GUARDS = find_guards(SQL)


def _found(kind: str, where: str, text: str) -> list[Guard]:
    return [g for g in GUARDS if (g.kind, g.where, g.text) == (kind, where, text)]


@pytest.mark.parametrize(
    ("kind", "where", "text"),
    [
        ("where", "public.reactor_complete", "j.lease_token = i.lease_token"),
        ("where", "public.reactor_complete", "j.status = 'processing'"),
        ("where", "reactor.create_claim_function", "j.run_at <= now()"),
        ("where", "public.reactor_reap", "j.lease_expires_at < now()"),
        ("where", "public.reactor_tick", "job_type = reactor.probe_job_type()"),
        ("where", "public.reactor_cancel_own", "user_id = $2"),
        ("case", "public.reactor_fail", "i.permanent or j.attempts >= j.max_attempts"),
        ("if", "reactor.check_range", "p_value is null"),
        ("if", "reactor.insert_policy", "n >= rule.max_pending"),
        ("check", "reactor.standby", "slots >= 0"),
        ("check", "reactor.create_job_table", "max_attempts between 1 and 1000"),
        ("policy", "reactor.create_job_table", "user_id = auth.uid()"),
        ("trigger", "reactor.guard_job_table", "current_user = ''authenticated''"),
    ],
)
def test_known_guards_are_found_where_they_stand(kind: str, where: str, text: str):
    found = _found(kind, where, text)
    assert found, f"no {kind} guard `{text}` in {where}"
    for g in found:
        assert text in SQL.splitlines()[g.line - 1]


def test_guards_are_numbered_in_file_order():
    assert [g.id for g in GUARDS] == list(range(1, len(GUARDS) + 1))
    assert [g.start for g in GUARDS] == sorted(g.start for g in GUARDS)
    assert len(GUARDS) > 150


def test_a_where_is_split_into_its_and_operands_but_not_a_between():
    sql = "select 1 from t where a = 1 and b between 1 and 2 and (c or d) -- and e = 5\n order by x;"
    assert [g.text for g in find_guards(sql)] == ["a = 1", "b between 1 and 2", "(c or d)"]


def test_a_where_with_a_top_level_or_is_one_guard():
    assert [g.text for g in find_guards("delete from t where a or b and c;")] == ["a or b and c"]


def test_sql_in_strings_counts_but_comments_index_predicates_and_ddl_ifs_do_not():
    sql = (
        "create table if not exists t (x int check (x > 0));\n"
        "-- where commented = out\n"
        "execute format('select s from public.%I where id = $1 and s = ''a''', t);\n"
        "execute format('create index if not exists i on public.%I (c) where s = ''p''', t);\n"
        "do $$ begin if not exists (select 1) then raise exception 'where no = code'; end if; end $$;\n"
    )
    assert [(g.kind, g.text, g.line) for g in find_guards(sql)] == [
        ("check", "x > 0", 1),
        ("where", "id = $1", 3),
        ("where", "s = ''a''", 3),
        ("if", "not exists (select 1)", 5),
    ]


def test_each_mutant_reverses_its_guard_and_changes_nothing_else():
    for g in GUARDS:
        assert SQL[g.start : g.end] == g.text
        assert SQL.count("\n", 0, g.start) + 1 == g.line
        assert g.text.count("(") == g.text.count(")"), g.label()
        assert not g.text.lower().startswith(("and ", "or ", "where ")), g.label()
        mutant = mutate(SQL, g)
        assert mutant == SQL[: g.start] + f"not ({g.text})" + SQL[g.end :]
