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


@dataclass
class Catalog:
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type
    primary_keys: dict[str, list[str]] = field(default_factory=dict)
    functions: dict[str, list[Function]] = field(default_factory=dict)

    @classmethod
    async def load(cls, pool: asyncpg.Pool) -> Catalog:
        catalog = cls()
        async with pool.acquire() as conn:
            for row in await conn.fetch(_TABLES, SCHEMA):
                catalog.columns.setdefault(row["table"], {})[row["column"]] = row["type"]
            for row in await conn.fetch(_PRIMARY_KEYS, SCHEMA):
                catalog.primary_keys[row["table"]] = list(row["columns"])
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
