-- reactor 0005: the hot path, measured against pgqueuer (docs/benchmarks.md).
--
-- 1. A claim does not wait for its WAL flush. A claim's commit used to wait for the disk like
--    every other commit: about half of a one-job claim's time in Postgres on the benchmark
--    machine, and the largest single step between an insert and its handler. Losing a claim
--    costs nothing that at-least-once delivery does not already allow: if the server crashes in
--    the fraction of a second before the claim reaches the disk, the job is back to `pending`
--    with its attempts unspent, the worker's outcome for it is refused as stale (its lease token
--    is gone), and the job runs again. Completes, fails, heartbeats and everything else still
--    commit synchronously (unless the server says otherwise), and any of them flushes the claims
--    before it. The claim's body is 0003's, plus its first statement.
-- 2. Validating a batch no longer costs a query, a subtransaction and a scan of the ids seen so
--    far for every item (16 ms for a batch of 1,000, more than the update it guards): one query
--    finds each item's first problem, and only a lease token or retry_at that the cheap checks
--    cannot settle pays for an exception block. The errors, their wording and their order are
--    0003's. Stale ids are found with one set difference instead of a scan per item.

create or replace function public.reactor_claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  -- Local to the transaction, so it holds at the commit that follows this call.
  perform set_config('synchronous_commit', 'off', true);
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  if p_job_types is null or cardinality(p_job_types) = 0 or array_position(p_job_types, null) is not null then
    raise exception 'p_job_types must list the job types this worker handles';
  end if;
  return query execute format($q$
    with picked as (
      select j.id from public.%1$I j
      where j.status = 'pending' and j.run_at <= now() and j.job_type = any($1)
      order by j.priority desc, j.run_at, j.id
      limit $2
      for update skip locked
    ), claimed as (
      update public.%1$I j
      set status = 'processing', attempts = j.attempts + 1, locked_by = $3,
          lease_expires_at = now() + make_interval(secs => $4), lease_token = gen_random_uuid(),
          started_at = now(), updated_at = now()
      from picked where j.id = picked.id
      returning j.*
    )
    select c.id, c.job_type, c.payload, c.priority, c.attempts, c.max_attempts, c.lease_token,
           c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id
    from claimed c order by c.priority desc, c.run_at, c.id
  $q$, t) using p_job_types, p_limit, p_worker, p_lease_seconds;
end
$$;

-- Whether a text casts to the type; only for values the set-based checks below cannot settle.
create or replace function reactor.casts_to_uuid(p_value text) returns boolean
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  perform p_value::uuid;
  return true;
exception when invalid_text_representation then
  return false;
end
$$;

create or replace function reactor.casts_to_timestamptz(p_value text) returns boolean
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
begin
  perform p_value::timestamptz;
  return true;
exception when others then
  return false;
end
$$;

-- Whether a text is a UUID in the form Postgres prints (the form every lease token comes back
-- in), checked without a regex.
create or replace function reactor.canonical_uuid(p_value text) returns boolean
language sql immutable as $$  -- no SET clause, so the planner inlines it
  select pg_catalog.length(p_value) = 36
     and pg_catalog.substr(p_value, 9, 1) = '-' and pg_catalog.substr(p_value, 14, 1) = '-'
     and pg_catalog.substr(p_value, 19, 1) = '-' and pg_catalog.substr(p_value, 24, 1) = '-'
     and pg_catalog.ltrim(pg_catalog.replace(p_value, '-', ''), '0123456789abcdef') = ''
$$;

-- 0003's batch validation, checked for the whole batch in one query: each item's first problem
-- in 0003's order, then the first item that has one.
create or replace function reactor.batch_items(p_items jsonb, p_kind text)
returns table (id bigint, lease_token uuid, result jsonb, error text, retry_at timestamptz, permanent boolean)
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  allowed text[] := case p_kind
    when 'lease' then array['id', 'lease_token']
    when 'complete' then array['id', 'lease_token', 'result']
    when 'fail' then array['id', 'lease_token', 'error', 'retry_at', 'permanent']
  end;
  problem text;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    raise exception 'items must be a JSON array of objects';
  end if;
  if jsonb_array_length(p_items) > reactor.max_batch() then
    raise exception 'a batch holds at most % items, got %', reactor.max_batch(), jsonb_array_length(p_items);
  end if;
  select format('item %s: %s', c.o, c.problem) into problem
  from (
    select x.o, case
      when jsonb_typeof(x.e) <> 'object' then 'must be a JSON object'
      when (x.e - allowed) <> '{}' then format('unknown key "%s"', left((
        select k.key from jsonb_object_keys(x.e) with ordinality as k(key, ko)
        where not k.key = any(allowed) order by k.ko limit 1), 100))
      -- 0003's test, (x.e ->> 'id') ~ '^[0-9]{1,18}$' and >= 1, without a regex per item.
      when jsonb_typeof(x.e -> 'id') is distinct from 'number'
           or scale((x.e -> 'id')::numeric) <> 0
           or (x.e -> 'id')::numeric not between 1 and 999999999999999999 then 'id must be a positive integer'
      when row_number() over (partition by x.e -> 'id' order by x.o) > 1
        then format('job %s appears twice in one batch', x.e ->> 'id')
      when jsonb_typeof(x.e -> 'lease_token') is distinct from 'string' then 'lease_token is missing'
      when not reactor.canonical_uuid(x.e ->> 'lease_token')
           and not reactor.casts_to_uuid(x.e ->> 'lease_token') then 'lease_token is not a UUID'
      when p_kind <> 'fail' then null
      when jsonb_typeof(x.e -> 'error') is distinct from 'string' or x.e ->> 'error' = ''
        then 'error must be a non-empty string'
      when coalesce(jsonb_typeof(x.e -> 'retry_at'), 'null') <> 'null'
           and not reactor.casts_to_timestamptz(x.e ->> 'retry_at')
        then 'retry_at must be an ISO 8601 timestamp'
      when coalesce(jsonb_typeof(x.e -> 'permanent'), 'null') not in ('null', 'boolean')
        then 'permanent must be true or false'
    end as problem
    from jsonb_array_elements(p_items) with ordinality as x(e, o)
  ) c
  where c.problem is not null
  order by c.o
  limit 1;
  if problem is not null then
    raise exception '%', problem;
  end if;
  return query
    select (x.e ->> 'id')::bigint, (x.e ->> 'lease_token')::uuid, x.e -> 'result',
           case when p_kind = 'fail' then left(x.e ->> 'error', 10000) end,
           case when p_kind = 'fail' and jsonb_typeof(x.e -> 'retry_at') = 'string'
                then (x.e ->> 'retry_at')::timestamptz end,
           p_kind = 'fail' and coalesce((x.e -> 'permanent')::boolean, false)
    from jsonb_array_elements(p_items) with ordinality as x(e, o)
    order by x.o;
end
$$;

create or replace function reactor.stale_ids(p_items jsonb, p_done bigint[]) returns jsonb
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_agg(s.id order by s.id), '[]')
  from (select (x ->> 'id')::bigint as id from jsonb_array_elements(p_items) x
        except all select unnest(p_done)) s
$$;

insert into reactor.schema_migrations (version) values ('0005_hot_path') on conflict do nothing;
