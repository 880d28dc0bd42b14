"""What PostgREST keeps in its schema cache: the exposed schema's tables, columns and functions.

backend.py decides when it is read: under the local profile once and again on a miss, so a table
or function created after start-up is found on its first call; under the hosted profile only at
start and on `NOTIFY pgrst`, as PostgREST reads it. The hints of PostgREST's "not found in the
schema cache" errors come from here too (closest()).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import asyncpg

SCHEMA = "public"

_TABLES = """
select c.relname as table, a.attname as column, format_type(a.atttypid, a.atttypmod) as type
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = $1 and c.relkind in ('r', 'v', 'm', 'f', 'p')
order by c.relname, a.attnum
"""

_PRIMARY_KEYS = """
select c.relname as table, array_agg(a.attname order by a.attnum) as columns
from pg_index i
join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)
where n.nspname = $1 and i.indisprimary
group by c.relname
"""

# Foreign keys between tables of the exposed schema, each with its columns in key order, and every
# primary key and unique constraint's columns (a foreign key over those is one-to-one).
_FOREIGN_KEYS = """
select c.conname as name, src.relname as table, tgt.relname as ftable,
       array(select a.attname from unnest(c.conkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as columns,
       array(select a.attname from unnest(c.confkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.i) as fcolumns
from pg_constraint c
join pg_class src on src.oid = c.conrelid
join pg_namespace sn on sn.oid = src.relnamespace
join pg_class tgt on tgt.oid = c.confrelid
join pg_namespace tn on tn.oid = tgt.relnamespace
where c.contype = 'f' and sn.nspname = $1 and tn.nspname = $1
order by src.relname, c.conname
"""

_UNIQUE_KEYS = """
select c.relname as table,
       array(select a.attname from unnest(k.conkey) n join pg_attribute a
             on a.attrelid = k.conrelid and a.attnum = n) as columns
from pg_constraint k
join pg_class c on c.oid = k.conrelid
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = $1 and k.contype in ('p', 'u')
"""

_FUNCTIONS = """
select p.proname as name,
       coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, array[p.pronargs])) as arg_names,
       array(select format_type(t, null) from unnest(p.proargtypes) t) as arg_types,
       p.pronargdefaults as n_defaults,
       p.proretset as returns_set,
       format_type(p.prorettype, null) as return_type,
       rt.typtype as return_kind,
       p.provolatile::text as volatility,
       coalesce(
         (select jsonb_object_agg(a.n, format_type(a.t, null))
          from unnest(p.proargnames, p.proallargtypes, p.proargmodes) a(n, t, m)
          where a.m in ('t', 'o')),
         (select jsonb_object_agg(att.attname, format_type(att.atttypid, att.atttypmod))
          from pg_attribute att
          where att.attrelid = rt.typrelid and att.attnum > 0 and not att.attisdropped),
         '{}') as result_columns,
       coalesce(p.proargmodes, '{}') @> array['t'::"char"] or rt.typtype = 'c'
         or p.prorettype = 'record'::regtype as returns_rows,
       coalesce(p.proconfig, '{}') as settings
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
where n.nspname = $1 and p.prokind = 'f'
  and coalesce(p.proargmodes, '{}') <@ array['i'::"char", 't'::"char", 'o'::"char"]
"""


@dataclass(frozen=True)
class Function:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    n_defaults: int
    returns_set: bool
    return_type: str
    returns_rows: bool  # composite, record or TABLE(...): rows of named columns
    volatile: bool
    result_columns: dict[str, str]  # column -> SQL type, when it returns rows
    settings: dict[str, str] = field(default_factory=dict)  # its `SET name = value` clauses

    @property
    def is_void(self) -> bool:
        return self.return_type == "void"

    @property
    def single_json_arg(self) -> bool:
        return len(self.arg_names) == 1 and self.arg_names[0] == "" and self.arg_types[0] in ("json", "jsonb")

    def accepts(self, names: set[str]) -> bool:
        required = set(self.arg_names[: len(self.arg_names) - self.n_defaults])
        return required <= names <= set(self.arg_names)


@dataclass(frozen=True)
class Junction:
    """The join table of a many-to-many relationship and its two foreign keys."""

    table: str
    constraint1: str  # to the origin
    constraint2: str  # to the target
    source_columns: tuple[tuple[str, str], ...]  # (junction column, origin column)
    target_columns: tuple[tuple[str, str], ...]  # (junction column, target column)


@dataclass(frozen=True)
class Relationship:
    """A way to embed `ftable` in `table`, as PostgREST's schema cache lists them: many-to-one
    and one-to-many from each foreign key (one-to-one where its columns are unique), and
    many-to-many through a table whose primary key holds foreign keys to both."""

    table: str
    ftable: str
    cardinality: str  # many-to-one, one-to-many, one-to-one or many-to-many
    constraint: str  # the foreign key's name; for many-to-many, the junction's
    columns: tuple[tuple[str, str], ...]  # (column of table, column of ftable); () for many-to-many
    junction: Junction | None = None

    @property
    def to_one(self) -> bool:
        return self.cardinality in ("many-to-one", "one-to-one")

    @property
    def is_self(self) -> bool:
        return self.table == self.ftable

    def describe(self) -> dict[str, str]:
        """The relationship as PostgREST lists it in an ambiguity error's details."""

        def cols(names) -> str:
            return "(" + ", ".join(names) + ")"

        if self.junction is not None:
            j = self.junction
            text = (
                f"{j.table} using {j.constraint1}{cols(c for _, c in j.source_columns)} and "
                f"{j.constraint2}{cols(c for _, c in j.target_columns)}"
            )
        else:
            text = (
                f"{self.constraint} using {self.table}{cols(a for a, _ in self.columns)} and "
                f"{self.ftable}{cols(b for _, b in self.columns)}"
            )
        return {
            "cardinality": self.cardinality,
            "embedding": f"{self.table} with {self.ftable}",
            "relationship": text,
        }


@dataclass
class Catalog:
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type
    primary_keys: dict[str, list[str]] = field(default_factory=dict)
    functions: dict[str, list[Function]] = field(default_factory=dict)
    relationships: dict[str, list[Relationship]] = field(default_factory=dict)  # by origin table

    @classmethod
    async def load(cls, pool: asyncpg.Pool) -> Catalog:
        catalog = cls()
        async with pool.acquire() as conn:
            for row in await conn.fetch(_TABLES, SCHEMA):
                catalog.columns.setdefault(row["table"], {})[row["column"]] = row["type"]
            for row in await conn.fetch(_PRIMARY_KEYS, SCHEMA):
                catalog.primary_keys[row["table"]] = list(row["columns"])
            keys = [
                (r["name"], r["table"], r["ftable"], tuple(zip(r["columns"], r["fcolumns"], strict=True)))
                for r in await conn.fetch(_FOREIGN_KEYS, SCHEMA)
            ]
            unique = {(r["table"], frozenset(r["columns"])) for r in await conn.fetch(_UNIQUE_KEYS, SCHEMA)}
            catalog.relationships = _relationships(keys, unique, catalog.primary_keys)
            for row in await conn.fetch(_FUNCTIONS, SCHEMA):
                catalog.functions.setdefault(row["name"], []).append(
                    Function(
                        name=row["name"],
                        arg_names=tuple(row["arg_names"]),
                        arg_types=tuple(row["arg_types"]),
                        n_defaults=row["n_defaults"],
                        returns_set=row["returns_set"],
                        return_type=row["return_type"],
                        returns_rows=row["returns_rows"],
                        volatile=row["volatility"] == "v",
                        result_columns=json.loads(row["result_columns"]),
                        settings=dict(_setting(text) for text in row["settings"]),
                    )
                )
        return catalog


def _relationships(
    keys: list[tuple[str, str, str, tuple[tuple[str, str], ...]]],
    unique: set[tuple[str, frozenset[str]]],
    primary_keys: dict[str, list[str]],
) -> dict[str, list[Relationship]]:
    """Every relationship by origin table, as PostgREST's SchemaCache builds them (addM2MRels:
    a junction's foreign key columns must all be in its primary key)."""
    found: dict[str, list[Relationship]] = {}
    for name, table, ftable, pairs in keys:
        one = (table, frozenset(a for a, _ in pairs)) in unique
        forward = "one-to-one" if one else "many-to-one"
        backward = "one-to-one" if one else "one-to-many"
        found.setdefault(table, []).append(Relationship(table, ftable, forward, name, pairs))
        found.setdefault(ftable, []).append(
            Relationship(ftable, table, backward, name, tuple((b, a) for a, b in pairs))
        )
    for name1, junction, table1, pairs1 in keys:
        for name2, junction2, table2, pairs2 in keys:
            if junction2 != junction or name1 == name2:
                continue
            used = {a for a, _ in pairs1} | {a for a, _ in pairs2}
            if not used <= set(primary_keys.get(junction, [])):
                continue
            found.setdefault(table1, []).append(
                Relationship(
                    table1,
                    table2,
                    "many-to-many",
                    junction,
                    (),
                    Junction(junction, name1, name2, pairs1, pairs2),
                )
            )
    return found


def _setting(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


# PostgREST's hints ("Perhaps you meant ...") come from the Haskell `fuzzyset` package (0.2.4, the
# version its cabal file allows): n-gram cosine similarity picks up to 50 candidates, normalized
# Levenshtein similarity ranks them and must reach the minimum score. Ported here; candidates
# of equal score keep the order in which they were given, which may differ from Haskell's.


def closest(candidates: list[str], value: str, min_score: float) -> str | None:
    """The candidate PostgREST names in a hint for `value` (Fuzzy.getOneWithMinScore), or None."""
    exact = {}
    for candidate in reversed(candidates):  # fromList adds from the end; the first added stays
        exact.setdefault(candidate.lower(), candidate)
    key = value.lower()
    if key in exact:
        return exact[key]
    entries = list(exact)
    for size in (3, 2):
        query = _gram_vector(key, size)
        query_norm = math.sqrt(sum(c * c for c in query.values()))
        scored = []
        for entry in entries:
            grams = _gram_vector(entry, size)
            dot = sum(count * grams[gram] for gram, count in query.items() if gram in grams)
            if dot:
                scored.append((dot / (query_norm * math.sqrt(sum(c * c for c in grams.values()))), entry))
        scored.sort(key=lambda pair: -pair[0])
        ranked = sorted(((_similarity(key, entry), entry) for _, entry in scored[:50]), key=lambda p: -p[0])
        found = [entry for score, entry in ranked if score >= min_score]
        if found:
            return exact[found[0]]
    return None


def _gram_vector(value: str, size: int) -> Counter[str]:
    """How often each n-gram occurs in the value lowercased, stripped of all but letters, digits,
    spaces and commas, and enclosed in hyphens."""
    kept = "".join(ch for ch in value.lower() if ch.isalnum() or ch.isspace() or ch == ",")
    text = f"-{kept}-"
    return Counter(text[i : i + size] for i in range(len(text) - size + 1))


def _similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / the longer length (text-metrics' levenshteinNorm)."""
    if a == b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return float(1 - Fraction(previous[-1], max(len(a), len(b))))  # exact, as its Ratio is
