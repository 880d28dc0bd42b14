-- reactor 0001: the `reactor` schema, the migration ledger and the registry of job tables.
--
-- Internals live in schema `reactor`, which the API roles cannot use. Every migration is
-- idempotent and records itself in reactor.schema_migrations as its last statement, so the
-- whole script (`reactor sql`) can be pasted into the Supabase SQL editor again and again.

create schema if not exists reactor;
revoke all on schema reactor from public;

create table if not exists reactor.schema_migrations (
  version text primary key,
  applied_at timestamptz not null default now()
);

-- Every table created by reactor.create_job_table(); entry points accept only these names.
create table if not exists reactor.job_tables (
  name text primary key,
  created_at timestamptz not null default now()
);

-- Bounds on what one call may ask for; they keep a single request's transaction short.
create or replace function reactor.max_batch() returns integer
language sql immutable as $$ select 1000 $$;

create or replace function reactor.check_range(p_name text, p_value bigint, p_min bigint, p_max bigint)
returns void
language plpgsql immutable as $$
begin
  if p_value is null then
    raise exception '% is missing', p_name;
  end if;
  if p_value < p_min or p_value > p_max then
    raise exception '% must be between % and %, got %', p_name, p_min, p_max, p_value;
  end if;
end
$$;

-- The registered job table for `p_table`, or a clear error. Entry points interpolate only names
-- returned from here, and only through format('%I').
create or replace function reactor.job_table(p_table text) returns text
language plpgsql stable as $$
begin
  if p_table is null or p_table = '' then
    raise exception 'job table name is missing';
  end if;
  if not exists (select 1 from reactor.job_tables where name = p_table) then
    raise exception 'unknown job table "%"', left(p_table, 100)
      using hint = 'Create it with: select reactor.create_job_table(''<name>'');';
  end if;
  return p_table;
end
$$;

-- Retry delay after `p_attempt` failed attempts: exponential with full jitter, a uniform draw
-- between zero and min(cap, base * 2^(attempt - 1)). With the defaults (base 2 s, cap 1 h) the
-- ceiling is 2 s after the first failure, 4 s after the second, 16 s after the fourth, 8 min 32 s
-- after the ninth, and 1 h from the twelfth on. Full jitter spreads a burst of failures evenly
-- instead of retrying them in lockstep.
create or replace function reactor.backoff(
  p_attempt integer, p_base_seconds double precision default 2, p_cap_seconds double precision default 3600
) returns interval
language sql volatile as $$
  select make_interval(secs => random() * least(
    p_cap_seconds, p_base_seconds * power(2::double precision, least(greatest(p_attempt, 1), 60) - 1)
  ))
$$;

revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0001_reactor_schema') on conflict do nothing;
