-- reactor: the database contract as it stands today, the state sql/migrations/0001 … 0026 build.
--
-- Read this file to learn what the database holds. `reactor sql` prints it for a new project: paste
-- it into the Supabase SQL editor. Every statement is idempotent, so pasting it twice changes
-- nothing, and it records every migration it contains, so `reactor migrate` afterwards applies only
-- later ones. A project with an earlier version upgrades with the migrations instead (`reactor
-- migrate`, or paste `reactor sql --upgrade`). tests/contract/test_schema.py keeps this file equal
-- to what the migrations build.
--
-- Internals live in schema `reactor`, which the API roles cannot use. Entry points are
-- `public.reactor_*` (the schema PostgREST exposes), SECURITY DEFINER with the search path
-- pg_catalog, pg_temp, executable by `service_role` only (reactor_cancel_own also by
-- `authenticated`). Batches are JSON arrays of objects, at most reactor.max_batch() items; a
-- malformed item rejects the whole call before anything changes. Complete, fail, release,
-- heartbeat and progress act only when the caller holds the job's current lease token, and report
-- the items whose token was stale.


-- A project with an earlier version of this contract upgrades with the migrations: this file would
-- leave the earlier versions of functions whose arguments changed beside the current ones.
do $$
begin
  if to_regclass('reactor.schema_migrations') is null then
    return;  -- a new project
  end if;
  if exists (select 1 from reactor.schema_migrations)
     and not exists (select 1 from reactor.schema_migrations where version = '0026_set_limits_locks_once') then
    raise exception 'this project has an earlier version of reactor''s contract; this script is for new projects'
      using hint = 'Upgrade it with `reactor migrate`, or paste the output of `reactor sql --upgrade`.';
  end if;
end
$$;


-- ==== 1. The schema, the ledger and the registries ====

create schema if not exists reactor;
revoke all on schema reactor from public;

-- The migrations applied to this database, by file stem (sql/migrations/<version>.sql).
create table if not exists reactor.schema_migrations (
  version text primary key,
  applied_at timestamptz not null default now()
);

-- Every table created by reactor.create_job_table(); entry points accept only these names.
create table if not exists reactor.job_tables (
  name text primary key,
  created_at timestamptz not null default now()
);

-- Workers standing by for hand-offs (section 6): per job table and worker, the job types it takes
-- and its free slots, until expires_at, and the hand-offs made to it.
create table if not exists reactor.standby (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  worker text not null,
  job_types text[] not null,
  slots integer not null check (slots >= 0),
  expires_at timestamptz not null,
  handed bigint not null default 0,  -- hand-offs made to the worker, counted as it counts them
  primary key (job_table, worker)
);
revoke all on reactor.standby from public;

-- reactor's share of the project's Realtime message quota (section 5): the most messages a second
-- its inserts may cause. Change it with an update; it applies at once.
create table if not exists reactor.realtime_budget (
  only_row boolean primary key default true check (only_row),
  messages_per_second integer not null default 50 check (messages_per_second >= 0),
  per_owner_per_second integer not null default 5 check (per_owner_per_second >= 0)
);
insert into reactor.realtime_budget default values on conflict do nothing;
revoke all on reactor.realtime_budget from public;

create sequence if not exists reactor.announced_second;  -- the second reactor.announced counts
create sequence if not exists reactor.announced;  -- messages announced in that second
create sequence if not exists reactor.withheld;  -- inserts left unannounced, in all
revoke all on sequence reactor.announced_second, reactor.announced, reactor.withheld from public;

-- A secret the topics are derived from. No API role can read it, so nobody can work a worker's
-- topic out from its id, even where the project's own policies on realtime.messages let signed-in
-- users join any private channel.
create table if not exists reactor.topic_key (
  only_row boolean primary key default true check (only_row),
  key uuid not null default gen_random_uuid()
);
insert into reactor.topic_key default values on conflict do nothing;
revoke all on reactor.topic_key from public;

-- Limits per job table and type that hold across the fleet (section 6): at most `concurrency`
-- processing, at most `rate` claims in any `per_seconds`, at most `per_user` processing per owner,
-- or none claimed while `paused`. `starts` keeps the latest claims for the rate.
create table if not exists reactor.job_limits (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  concurrency integer check (concurrency >= 0),
  rate integer check (rate between 1 and 10000),
  per_seconds integer check (per_seconds between 1 and 86400),
  per_user integer check (per_user >= 1),
  paused boolean not null default false,
  starts timestamptz[] not null default '{}',  -- the latest claims, at most `rate` of them
  primary key (job_table, job_type),
  check ((rate is null) = (per_seconds is null))
);
revoke all on reactor.job_limits from public;

-- What one job type's inserts by `authenticated` may be (section 5). No row: such inserts are
-- refused.
create table if not exists reactor.insert_rules (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  max_priority integer not null,
  max_attempts integer not null check (max_attempts between 1 and 1000),
  max_delay_seconds integer not null check (max_delay_seconds >= 0),
  max_payload_bytes integer not null check (max_payload_bytes between 2 and 1048576),
  max_pending integer not null check (max_pending >= 1),
  max_per_minute integer not null check (max_per_minute >= 1),
  primary key (job_table, job_type)
);
revoke all on reactor.insert_rules from public;

-- Log lines of running jobs (section 7, reactor_log), which each job's owner reads under RLS
-- and watches over Realtime; deleted with their job.
create table if not exists public.job_logs (
  id bigint generated always as identity primary key,
  job_table text not null,
  job_id bigint not null,
  user_id uuid,  -- the job's owner, for RLS
  attempt integer not null,
  level text not null check (level in ('debug', 'info', 'warning', 'error')),
  message text not null check (length(message) <= 2000),
  logged_at timestamptz not null default now()
);
create index if not exists job_logs_job_idx on public.job_logs (job_table, job_id, id);
alter table public.job_logs enable row level security;
revoke all on public.job_logs from public, anon, authenticated;
revoke all on sequence public.job_logs_id_seq from public, anon, authenticated;
grant select (id, job_table, job_id, user_id, attempt, level, message, logged_at) on public.job_logs to authenticated;
grant all on public.job_logs to service_role;
do $$
begin
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = 'job_logs'
                 and policyname = 'reactor_owner_reads') then
    create policy reactor_owner_reads on public.job_logs for select to authenticated using (user_id = auth.uid());
  end if;
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                 and schemaname = 'public' and tablename = 'job_logs') then
    alter publication supabase_realtime add table public.job_logs;
  end if;
end
$$;


-- ==== 2. Numbers the SQL and the Python worker both need ====
--
-- The worker keeps copies of some (reactor/store.py, reactor/listener.py); they must agree.

-- The most items one call may ask for; it keeps a single request's transaction short.
create or replace function reactor.max_batch() returns integer
language sql immutable as $$ select 1000 $$;

-- At most this many jobs wait on one worker's hand-off lease when that worker dies unheard; a
-- burst beyond it takes the claim path, which offers the slots again.
create or replace function reactor.max_standby_slots() returns integer
language sql immutable as 'select 16';

-- How long an insert waits for a standby row another transaction holds, when every standby with
-- a free slot is held, and a claim for its own standby row held by an insert: either commits
-- within it, and no other user's transaction holds up an insert or a claim for longer.
create or replace function reactor.standby_lock_wait() returns text
language sql immutable as $$ select '10ms' $$;

-- The job type of probe rows: a worker inserts them as `cancelled`, so no worker claims them, and
-- hears them over Realtime to check that Realtime still delivers. Statistics leave them out.
create or replace function reactor.probe_job_type() returns text
language sql immutable as $$ select 'reactor.probe' $$;

-- The largest payload any row may carry, as Postgres stores it: 1 MiB.
create or replace function reactor.max_payload_bytes() returns integer
language sql immutable as 'select 1048576';

-- The columns of a job table its owner may read: not the lease token, the worker or the lease's
-- end.
create or replace function reactor.owner_columns() returns text
language sql immutable as $$
  select 'id, job_type, payload, priority, run_at, max_attempts, user_id, status, attempts, result, '
         'last_error, progress, progress_message, created_at, started_at, completed_at, updated_at, unique_key, '
         'parent_id, resumed'
$$;

-- The most children one job may spawn (public.reactor_spawn).
create or replace function reactor.max_children() returns integer
language sql immutable as 'select 1000';

-- The most log lines one job may write (public.reactor_log).
create or replace function reactor.max_log_lines() returns integer
language sql immutable as 'select 1000';

-- The largest payload an announcement carries, as JSON text. A hand-off whose payload is larger
-- is announced without it, and the worker claims the job whole; Realtime's limit on a broadcast's
-- size is far above this.
create or replace function reactor.max_announced_payload_bytes() returns integer
language sql immutable as 'select 65536';


-- ==== 3. Validation helpers ====

-- Refuse a missing value or one outside p_min .. p_max, naming it.
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

-- A worker id: 1 to 200 characters.
create or replace function reactor.check_worker(p_worker text) returns void
language plpgsql immutable as $$
begin
  if p_worker is null or p_worker = '' or octet_length(p_worker) > 64 then
    raise exception 'p_worker must be a worker id of 1 to 64 bytes (Realtime cuts longer fields from big records)';
  end if;
end
$$;

-- A lease: 1 s to a day.
create or replace function reactor.check_lease_seconds(p_lease_seconds integer) returns void
language sql immutable as $$
  select reactor.check_range('p_lease_seconds', p_lease_seconds, 1, 86400)
$$;

-- The job types a worker handles: at least one, and no null.
create or replace function reactor.check_job_types(p_job_types text[]) returns void
language plpgsql immutable as $$
begin
  if p_job_types is null or cardinality(p_job_types) = 0 or array_position(p_job_types, null) is not null then
    raise exception 'p_job_types must list the job types this worker handles';
  end if;
end
$$;

-- Validate a batch and return it as rows, in the batch's order. `p_kind` says which keys an item
-- may carry:
--   lease    {id, lease_token}
--   complete {id, lease_token, result?}
--   fail     {id, lease_token, error, retry_at?, permanent?}
-- One query finds each item's first problem, and the call fails with the first item that has one.
-- Only a lease token or retry_at that the cheap checks cannot settle pays for an exception block.
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

-- Whether a text casts to the type; only for values the set-based checks of batch_items cannot
-- settle.
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

-- The ids of a validated batch that are not in p_done, in order: the items whose lease was stale.
create or replace function reactor.stale_ids(p_items jsonb, p_done bigint[]) returns jsonb
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_agg(s.id order by s.id), '[]')
  from (select (x ->> 'id')::bigint as id from jsonb_array_elements(p_items) x
        except all select unnest(p_done)) s
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

-- Whether a payload is nested deeper than 32 levels: whether any value sits 33 levels down.
create or replace function reactor.too_deep(p_payload jsonb) returns boolean
language sql immutable as $$  -- no SET clause, so the planner inlines it
  select pg_catalog.jsonb_path_exists(p_payload, 'strict $.**{33}')
$$;

-- Why a payload is refused, or null when it is within the bounds every row obeys.
create or replace function reactor.payload_problem(p_payload jsonb) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select case
    when pg_column_size(p_payload) > reactor.max_payload_bytes()
      then format('payload is %s bytes; at most %s are accepted', pg_column_size(p_payload),
                  reactor.max_payload_bytes())
    when reactor.too_deep(p_payload) then 'payload is nested deeper than 32 levels'
  end
$$;


-- ==== 4. Job tables ====
--
-- A job table lives in `public` so a frontend can insert through PostgREST under RLS, and is in
-- the `supabase_realtime` publication so workers hear inserts. `select reactor.create_job_table('x')`
-- makes another with the same shape; calling it again changes nothing.

-- Make reactor.claim_due_<table>, the claim query of one job table. Its query is static SQL, which
-- plpgsql plans once per database session and then reuses; a query built with format() would be
-- planned on every call (docs/benchmarks.md). It claims up to p_limit due, pending jobs of the
-- given types, highest priority first, then oldest run_at, with one ordered index scan per job
-- type (the claim index leads with job_type), merged: rows of types this worker does not handle,
-- however many and at whatever priority, are never read. Each claimed job counts an attempt and
-- gets a fresh lease token.
create or replace function reactor.create_claim_function(p_name text) returns void
language plpgsql as $$
begin
  execute format($ddl$
    create or replace function reactor.%1$I(
      p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer
    ) returns table (
      id bigint, job_type text, payload jsonb, priority integer, attempt integer,
      max_attempts integer, lease_token uuid, lease_expires_at timestamptz, run_at timestamptz,
      created_at timestamptz, started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
    )
    language plpgsql volatile set search_path = pg_catalog, pg_temp as $body$
    begin
      return query
        with picked as (
          select c.id from (select distinct x from unnest(p_job_types) x) t(job_type)
          cross join lateral (
            select j.id, j.priority, j.run_at from public.%2$I j
            where j.status = 'pending' and j.job_type = t.job_type and j.run_at <= now()
            order by j.priority desc, j.run_at, j.id
            limit p_limit
            for update skip locked
          ) c
          order by c.priority desc, c.run_at, c.id
          limit p_limit
        ), claimed as (
          update public.%2$I j
          set status = 'processing', attempts = j.attempts + 1, locked_by = p_worker,
              lease_expires_at = now() + make_interval(secs => p_lease_seconds),
              lease_token = gen_random_uuid(), started_at = now(), updated_at = now()
          from picked where j.id = picked.id
          returning j.*
        )
        select c.id, c.job_type, c.payload, c.priority, c.attempts, c.max_attempts, c.lease_token,
               c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id, c.resumed, c.parent_id
        from claimed c order by c.priority desc, c.run_at, c.id;
    end
    $body$
  $ddl$, 'claim_due_' || p_name, p_name);
  execute format('revoke all on function reactor.%I(text, text[], integer, integer) from public',
    'claim_due_' || p_name);
end
$$;

-- Give a job table its hand-off trigger (section 5). BEFORE triggers fire in name order; this one
-- is named to come after the table's own, which may set the row's run_at or job_type, and after
-- the insert policy.
create or replace function reactor.create_hand_off_trigger(p_name text) returns void
language plpgsql as $$
begin
  execute format(
    'create or replace trigger zz_reactor_hand_off before insert on public.%I for each row execute function reactor.hand_off()',
    p_name);
end
$$;

-- Its announcements (section 5): the rows that name a worker, broadcast to that worker.
create or replace function reactor.create_announce_trigger(p_name text) returns void
language plpgsql as $$
begin
  execute format(
    'create or replace trigger zz_reactor_announce after insert on public.%I for each row '
    'when (new.locked_by is not null) execute function reactor.announce()', p_name);
end
$$;

-- The bounds and grants every job table has beyond its shape: a `run_at` from 2000 to 2200 (a check
-- constraint; rows outside are clamped first, and active rows with a payload out of bounds fail
-- with the reason), the claim index leading with job_type, the indexes the insert policy counts
-- with, owners reading only reactor.owner_columns(), anon and authenticated kept off the id
-- sequence, and the insert policy's trigger. Idempotent and cheap once done: create_job_table()
-- runs it on every call.
create or replace function reactor.guard_job_table(p_name text) returns void
language plpgsql as $$
begin
  if not exists (select 1 from pg_constraint where conrelid = format('public.%I', p_name)::regclass
                 and conname = p_name || '_run_at_bounds') then
    -- Bring existing rows inside the bounds before the constraint holds them there.
    execute format($q$
      update public.%I set run_at = least(greatest(run_at, '2000-01-01 00:00:00+00'), '2199-12-31 00:00:00+00')
      where run_at < '2000-01-01 00:00:00+00' or run_at >= '2200-01-01 00:00:00+00'
    $q$, p_name);
    execute format($q$
      update public.%I set status = 'failed', completed_at = now(), updated_at = now(),
        locked_by = null, lease_token = null, lease_expires_at = null,
        last_error = 'refused: ' || reactor.payload_problem(payload)
      where status in ('pending', 'processing')
        and reactor.payload_problem(payload) is not null
    $q$, p_name);
    execute format($q$
      alter table public.%I add constraint %I
        check (run_at >= '2000-01-01 00:00:00+00' and run_at < '2200-01-01 00:00:00+00')
    $q$, p_name, p_name || '_run_at_bounds');
  end if;

  if not exists (select 1 from pg_indexes where schemaname = 'public' and indexname = p_name || '_claim_idx'
                 and indexdef like '%(job_type, priority DESC, run_at, id)%') then
    execute format('drop index if exists public.%I', p_name || '_claim_idx');
    execute format('create index %I on public.%I (job_type, priority desc, run_at, id) where status = ''pending''',
      p_name || '_claim_idx', p_name);
  end if;
  -- The policy counts one user's recent jobs and waiting jobs.
  if not exists (select 1 from pg_indexes where schemaname = 'public' and indexname = p_name || '_user_idx'
                 and indexdef like '%(user_id, created_at)%') then
    execute format('drop index if exists public.%I', p_name || '_user_idx');
    execute format('create index %I on public.%I (user_id, created_at)', p_name || '_user_idx', p_name);
  end if;
  -- Pending rows only: a claim, a heartbeat or an outcome never writes to it.
  execute format('create index if not exists %I on public.%I (user_id, job_type) where status = ''pending''',
    p_name || '_pending_user_idx', p_name);

  execute format('revoke select on public.%I from authenticated', p_name);
  perform reactor.create_unique_key(p_name);
  perform reactor.create_child_columns(p_name);
  perform reactor.create_log_triggers(p_name);
  perform reactor.create_overview_indexes(p_name);
  execute format('grant select (%s) on public.%I to authenticated', reactor.owner_columns(), p_name);
  execute format('revoke all on sequence %s from public, anon, authenticated',
    pg_get_serial_sequence(format('public.%I', p_name), 'id'));

  execute format(
    'create or replace trigger zy_reactor_insert_policy before insert on public.%I for each row '
    'when (current_user = ''authenticated'') execute function reactor.insert_policy()', p_name);
end
$$;

-- Create the job table public.<p_name> and register it, or, for a registered one, make sure it
-- has everything above; an unregistered table of that name is refused. Supabase grants every API
-- role everything in `public` by default; this takes it back and gives `authenticated` exactly:
-- insert its own rows (user-writable columns only) and read them (owner columns only).
create or replace function reactor.create_job_table(p_name text) returns text
language plpgsql as $$
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_]{0,47}$' then
    raise exception 'invalid job table name "%"', left(coalesce(p_name, '<null>'), 100)
      using hint = 'Use 1 to 48 lowercase letters, digits and underscores, starting with a letter.';
  end if;
  if to_regclass(format('public.%I', p_name)) is not null
     and not exists (select 1 from reactor.job_tables where name = p_name) then
    raise exception 'table public.% already exists and is not a reactor job table', p_name;
  end if;

  execute format($ddl$
    create table if not exists public.%1$I (
      id bigint generated always as identity primary key,
      job_type text not null check (job_type <> '' and length(job_type) <= 200),
      payload jsonb not null default '{}'::jsonb,
      priority integer not null default 0,
      run_at timestamptz not null default now(),
      max_attempts integer not null default 5 check (max_attempts between 1 and 1000),
      user_id uuid default auth.uid(),
      status text not null default 'pending'
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
      attempts integer not null default 0,
      result jsonb,
      last_error text,
      progress smallint check (progress between 0 and 100),
      progress_message text,
      locked_by text,
      lease_expires_at timestamptz,
      lease_token uuid,
      created_at timestamptz not null default now(),
      started_at timestamptz,
      completed_at timestamptz,
      updated_at timestamptz not null default now()
    )$ddl$, p_name);

  -- The claim and owner indexes are the guard's, below.
  execute format('create index if not exists %I on public.%I (lease_expires_at) where status = ''processing''',
    p_name || '_lease_idx', p_name);
  execute format('create index if not exists %I on public.%I (completed_at) where status in (''completed'', ''failed'', ''cancelled'')',
    p_name || '_finished_idx', p_name);

  -- Supabase grants every API role everything in `public` by default; take it back, then give
  -- `authenticated` exactly: insert its own rows (user-writable columns only) and read them (the
  -- columns meant for owners, granted by the guard).
  execute format('revoke all on public.%I from public, anon, authenticated', p_name);
  execute format('grant insert (job_type, payload, priority, run_at, max_attempts, user_id) on public.%I to authenticated', p_name);
  execute format('grant all on public.%I to service_role', p_name);

  execute format('alter table public.%I enable row level security', p_name);
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = p_name and policyname = 'reactor_owner_reads') then
    execute format('create policy reactor_owner_reads on public.%I for select to authenticated using (user_id = auth.uid())', p_name);
  end if;
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = p_name and policyname = 'reactor_owner_inserts') then
    execute format('create policy reactor_owner_inserts on public.%I for insert to authenticated with check (user_id = auth.uid())', p_name);
  end if;

  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = p_name) then
    execute format('alter publication supabase_realtime add table public.%I', p_name);
  end if;

  insert into reactor.job_tables (name) values (p_name) on conflict do nothing;
  perform reactor.guard_job_table(p_name);
  return p_name;
end
$$;

-- Give a job table its `unique_key` column (section 5: a key pending or running once per type and
-- owner), its index and the owner's grants on it.
create or replace function reactor.create_unique_key(p_name text) returns void
language plpgsql as $$
begin
  execute format('alter table public.%I add column if not exists unique_key text', p_name);
  if not exists (select 1 from pg_constraint where conrelid = format('public.%I', p_name)::regclass
                 and conname = p_name || '_unique_key_length') then
    execute format('alter table public.%I add constraint %I check (length(unique_key) between 1 and 200)',
      p_name, p_name || '_unique_key_length');
  end if;
  execute format($q$create index if not exists %I on public.%I (job_type, unique_key)
    where unique_key is not null and status in ('pending', 'processing')$q$, p_name || '_unique_idx', p_name);
  execute format('grant insert (unique_key), select (unique_key) on public.%I to authenticated', p_name);
end
$$;

-- A type's unique window (reactor.set_unique_window): its keys stay taken that long after insert.
create table if not exists reactor.unique_windows (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  seconds integer not null check (seconds between 1 and 31536000),
  primary key (job_table, job_type)
);
revoke all on reactor.unique_windows from public;

-- Keep p_job_type's keys in p_table taken for p_seconds after insert (null: only while the job
-- is pending or running). Returns the window in seconds, or null.
create or replace function reactor.set_unique_window(p_table text, p_job_type text, p_seconds integer)
returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  perform reactor.check_job_types(array[p_job_type]);
  if p_seconds is null then
    delete from reactor.unique_windows where job_table = t and job_type = p_job_type;
    return null;
  end if;
  perform reactor.check_range('p_seconds', p_seconds, 1, 31536000);
  insert into reactor.unique_windows values (t, p_job_type, p_seconds)
  on conflict (job_table, job_type) do update set seconds = excluded.seconds;
  execute format('create index if not exists %I on public.%I (job_type, unique_key, user_id) where unique_key is not null',
    t || '_unique_window_idx', t);
  return p_seconds;
end
$$;

-- A job left `processing` or `waiting` for a final status, or an unfinished child was deleted.
-- A cancelled job's unfinished children are cancelled (and theirs, through this trigger on them).
-- A child's parent that waits goes back to `pending` once no sibling is unfinished: the parent's
-- row is locked first, so of two siblings finishing at once the second to commit sees the first.
-- Each parent resumed adds one to the transaction's `reactor.resumed` setting, which the outcome
-- calls report, so the worker that finished the last child claims the parent at once.
create or replace function reactor.job_finished() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  job record;
  open_children bigint[];
  parent_status text;
  n integer;
begin
  if tg_op = 'DELETE' then
    job := old;
  else
    job := new;
  end if;
  if tg_op = 'UPDATE' and job.status = 'cancelled' then
    execute format($q$
      select array_agg(c.id) from (
        select id from public.%I where parent_id = $1 and status in ('pending', 'processing', 'waiting')
        limit reactor.max_batch()
      ) c
    $q$, tg_table_name) using job.id into open_children;
    if open_children is not null then
      perform public.reactor_cancel(tg_table_name, open_children);
    end if;
  end if;
  if job.parent_id is null then
    return null;
  end if;
  execute format('select status from public.%I where id = $1 for update', tg_table_name)
    using job.parent_id into parent_status;
  if parent_status is distinct from 'waiting' then
    return null;
  end if;
  execute format($q$
    update public.%1$I p set status = 'pending', run_at = now(), resumed = p.resumed + 1, updated_at = now()
    where p.id = $1 and not exists (
      select 1 from public.%1$I c where c.parent_id = $1 and c.status in ('pending', 'processing', 'waiting'))
  $q$, tg_table_name) using job.parent_id;
  get diagnostics n = row_count;
  if n > 0 then
    perform set_config('reactor.resumed', (coalesce(nullif(current_setting('reactor.resumed', true), ''), '0')::integer + 1)::text, true);
  end if;
  return null;
end
$$;

-- {"resumed": n} for the n parents this transaction resumed since the last call ({} for none),
-- and start counting again.
create or replace function reactor.resumed_answer() returns jsonb
language plpgsql volatile as $$
declare
  n integer := coalesce(nullif(current_setting('reactor.resumed', true), ''), '0')::integer;
begin
  perform set_config('reactor.resumed', '0', true);
  return case when n > 0 then jsonb_build_object('resumed', n) else '{}'::jsonb end;
end
$$;

-- Give a job table what child jobs need: `parent_id` (the job that spawned it), `child_key` (unique
-- among its parent's children), `resumed` (how often its children finishing woke it), the status
-- `waiting`, the index spawning and fan-in read, and the finish trigger.
create or replace function reactor.create_child_columns(p_name text) returns void
language plpgsql as $$
begin
  execute format('alter table public.%I add column if not exists parent_id bigint, '
                 'add column if not exists child_key text, '
                 'add column if not exists resumed integer not null default 0', p_name);
  if not exists (select 1 from pg_constraint where conrelid = format('public.%I', p_name)::regclass
                 and conname = p_name || '_status') then
    execute format('alter table public.%I drop constraint if exists %I', p_name, p_name || '_status_check');
    -- NOT VALID, then VALIDATE: the scan of existing rows does not block writers.
    execute format($q$alter table public.%I add constraint %I
      check (status in ('pending', 'processing', 'waiting', 'completed', 'failed', 'cancelled')) not valid$q$,
      p_name, p_name || '_status');
    execute format('alter table public.%I validate constraint %I', p_name, p_name || '_status');
  end if;
  if not exists (select 1 from pg_constraint where conrelid = format('public.%I', p_name)::regclass
                 and conname = p_name || '_child_key_length') then
    execute format('alter table public.%I add constraint %I check (length(child_key) between 1 and 200)',
      p_name, p_name || '_child_key_length');
  end if;
  execute format('create unique index if not exists %I on public.%I (parent_id, child_key) where parent_id is not null',
    p_name || '_child_idx', p_name);
  execute format($q$
    create or replace trigger reactor_job_finished after update of status on public.%I for each row
    when ((new.parent_id is not null or new.status = 'cancelled')
          and new.status in ('completed', 'failed', 'cancelled')
          and old.status in ('pending', 'processing', 'waiting'))
    execute function reactor.job_finished()$q$, p_name);
  execute format($q$
    create or replace trigger reactor_child_deleted after delete on public.%I for each row
    when (old.parent_id is not null and old.status in ('pending', 'processing', 'waiting'))
    execute function reactor.job_finished()$q$, p_name);
end
$$;

-- Jobs deleted (pruned, or by an operator): their lines go with them, in one statement.
create or replace function reactor.delete_job_logs() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  delete from public.job_logs l using gone g where l.job_table = tg_table_name and l.job_id = g.id;
  return null;
end
$$;

-- A job's error, each time it changes (a failed attempt, a reaped lease, a refused result), is
-- also a line of its log, so the owner and the dashboard see every attempt's error where the row
-- keeps only the last; within the job's max_log_lines(), like any line.
create or replace function reactor.log_error() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if (select count(*) from (select 1 from public.job_logs g
                            where g.job_table = tg_table_name and g.job_id = new.id
                            limit reactor.max_log_lines()) n) < reactor.max_log_lines() then
    insert into public.job_logs (job_table, job_id, user_id, attempt, level, message)
    values (tg_table_name, new.id, new.user_id, new.attempts, 'error', left(new.last_error, 2000));
  end if;
  return null;
end
$$;

-- Give a job table its log triggers: its jobs' lines deleted with them, its errors logged.
create or replace function reactor.create_log_triggers(p_name text) returns void
language plpgsql as $$
begin
  execute format('create or replace trigger reactor_logs_pruned after delete on public.%I '
                 'referencing old table as gone for each statement execute function reactor.delete_job_logs()',
                 p_name);
  execute format('create or replace trigger reactor_error_logged after update of last_error on public.%I '
                 'for each row when (new.last_error is distinct from old.last_error and new.last_error is not null) '
                 'execute function reactor.log_error()', p_name);
end
$$;

-- Give a job table the partial indexes the overview counts with: failed jobs (newest first, as
-- the dashboard lists them) and waiting ones.
create or replace function reactor.create_overview_indexes(p_name text) returns void
language plpgsql as $$
begin
  execute format('create index if not exists %I on public.%I (completed_at desc, id desc) where status = ''failed''',
    p_name || '_failed_idx', p_name);
  execute format('create index if not exists %I on public.%I (id) where status = ''waiting''',
    p_name || '_waiting_idx', p_name);
end
$$;

-- Registering a table in reactor.job_tables (create_job_table does) makes its claim function, its
-- hand-off trigger and its announcements.
create or replace function reactor.job_table_registered() returns trigger
language plpgsql as $$
begin
  perform reactor.create_claim_function(new.name);
  perform reactor.create_hand_off_trigger(new.name);
  perform reactor.create_announce_trigger(new.name);
  return null;
end
$$;

create or replace trigger job_table_registered after insert on reactor.job_tables
  for each row execute function reactor.job_table_registered();


-- ==== 5. What an insert goes through ====
--
-- Frontends insert job rows as signed-in users, and with anonymous sign-ins every visitor is
-- signed in, so every inserted row is hostile: no value one user can insert may crash a worker,
-- stop a chore, stall other users' jobs, buy priority or read what is not theirs
-- (docs/reliability.md, "Hostile rows"). A row passes, after the table's own BEFORE INSERT
-- triggers: the insert policy (trigger zy_reactor_insert_policy, for rows `authenticated` inserts;
-- `service_role`, operators and the project's own SECURITY DEFINER functions are not bound), then
-- the hand-off (trigger zz_reactor_hand_off, for every row), then the table's checks and RLS.

-- The insert policy, stated once per job type with reactor.allow_insert(): the types a user may
-- insert (none until listed), the highest priority a user may ask for, the most attempts a job
-- gets, how far ahead a job may be scheduled, the payload size, and per user the jobs waiting and
-- the inserts a minute. It checks the row as it will be stored, after the table's own BEFORE
-- triggers (which may derive a priority from the project's data). Errors carry PostgREST's
-- status: 403 for a type not allowed, 429 for a user over a per-user limit, 413 for a payload too
-- large, 400 for a value out of bounds. A run_at in the past becomes now (so it cannot jump the
-- queue) and a max_attempts above the rule becomes the rule's: asking for them harms nobody.
create or replace function reactor.insert_policy() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  rule reactor.insert_rules;
  n bigint;
begin
  select * into rule from reactor.insert_rules r where r.job_table = tg_table_name and r.job_type = new.job_type;
  if not found then
    raise exception 'job type "%" may not be inserted into % by signed-in users', left(new.job_type, 200), tg_table_name
      using errcode = '42501',
            hint = format('An operator allows it with: select reactor.allow_insert(%L, %L);', tg_table_name, left(new.job_type, 200));
  end if;
  if new.priority > rule.max_priority then
    raise exception 'priority % is above the highest allowed for job type "%" (%)', new.priority, new.job_type, rule.max_priority
      using errcode = 'PT400';
  end if;
  -- Lowered, not refused: the column's default may be above a type's limit.
  new.max_attempts := least(new.max_attempts, rule.max_attempts);
  if new.run_at < now() then
    new.run_at := now();  -- an earlier run_at would jump the queue
  elsif new.run_at > now() + make_interval(secs => rule.max_delay_seconds) then
    raise exception 'run_at % is more than % seconds ahead, the most allowed for job type "%"', new.run_at, rule.max_delay_seconds, new.job_type
      using errcode = 'PT400';
  end if;
  if pg_column_size(new.payload) > rule.max_payload_bytes then
    raise exception 'payload is % bytes; job type "%" accepts at most %', pg_column_size(new.payload), new.job_type, rule.max_payload_bytes
      using errcode = 'PT413';
  end if;
  if new.user_id is null then
    raise exception 'a job inserted by a signed-in user must name its owner in user_id' using errcode = 'PT400';
  end if;
  -- One user's inserts of one type are counted one at a time, so a burst of parallel requests
  -- cannot all pass the same count.
  perform pg_advisory_xact_lock(hashtextextended(tg_table_name || '/' || new.job_type || '/' || new.user_id::text, 0));
  execute format($q$
    select count(*) from (select 1 from public.%I where user_id = $1 and job_type = $2
                          and status = 'pending' limit $3) s
  $q$, tg_table_name) using new.user_id, new.job_type, rule.max_pending into n;
  if n >= rule.max_pending then
    raise exception 'you already have % jobs of type "%" waiting, the most allowed', n, new.job_type
      using errcode = 'PT429', hint = 'Wait for some to finish, or cancel some.';
  end if;
  execute format($q$
    select count(*) from (select 1 from public.%I where user_id = $1 and created_at > now() - interval '1 minute'
                          and job_type = $2 limit $3) s
  $q$, tg_table_name) using new.user_id, new.job_type, rule.max_per_minute into n;
  if n >= rule.max_per_minute then
    raise exception 'you inserted % jobs of type "%" in the last minute, the most allowed', n, new.job_type
      using errcode = 'PT429', hint = 'Try again in a minute.';
  end if;
  return new;
end
$$;

-- Let signed-in users insert jobs of p_job_type into p_table, within these limits (per user:
-- p_max_pending jobs of this type waiting to run, p_max_per_minute inserts of it a minute).
-- Calling it again replaces the type's limits.
create or replace function reactor.allow_insert(
  p_table text, p_job_type text, p_max_priority integer default 0, p_max_attempts integer default 5,
  p_max_delay_seconds integer default 2592000, p_max_payload_bytes integer default 65536,
  p_max_pending integer default 100, p_max_per_minute integer default 60
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  if p_job_type is null or p_job_type = '' or length(p_job_type) > 200 then
    raise exception 'p_job_type must be a job type of 1 to 200 characters';
  end if;
  if p_job_type like 'reactor.%' then
    raise exception 'job types starting with "reactor." are reactor''s own and cannot be inserted by users';
  end if;
  perform reactor.check_range('p_max_priority', p_max_priority, -2147483648, 2147483647);
  perform reactor.check_range('p_max_attempts', p_max_attempts, 1, 1000);
  perform reactor.check_range('p_max_delay_seconds', p_max_delay_seconds, 0, 2147483647);
  perform reactor.check_range('p_max_payload_bytes', p_max_payload_bytes, 2, reactor.max_payload_bytes());
  perform reactor.check_range('p_max_pending', p_max_pending, 1, 2147483647);
  perform reactor.check_range('p_max_per_minute', p_max_per_minute, 1, 2147483647);
  insert into reactor.insert_rules as r values (
    t, p_job_type, p_max_priority, p_max_attempts, p_max_delay_seconds, p_max_payload_bytes,
    p_max_pending, p_max_per_minute)
  on conflict (job_table, job_type) do update set
    max_priority = excluded.max_priority, max_attempts = excluded.max_attempts,
    max_delay_seconds = excluded.max_delay_seconds, max_payload_bytes = excluded.max_payload_bytes,
    max_pending = excluded.max_pending, max_per_minute = excluded.max_per_minute;
end
$$;

-- Stop signed-in users inserting jobs of p_job_type into p_table; true when it was allowed.
create or replace function reactor.forbid_insert(p_table text, p_job_type text) returns boolean
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
begin
  delete from reactor.insert_rules where job_table = reactor.job_table(p_table) and job_type = p_job_type;
  return found;
end
$$;

-- The number of this insert's message within its second, counted with sequences, which no
-- transaction waits on. Two inserts that both see a new second may both restart the count: the
-- budget can be passed by a message or two at a second's turn, never by more.
create or replace function reactor.announcement() returns bigint
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  second bigint := floor(extract(epoch from clock_timestamp()));
begin
  if (select last_value from reactor.announced_second) <> second then
    perform setval('reactor.announced_second', second);
    perform setval('reactor.announced', 1, false);
  end if;
  return nextval('reactor.announced');
end
$$;

-- The budget, and the inserts withheld from Realtime for it in all.
create or replace function reactor.realtime_state() returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object(
    'budget_per_second', (select b.messages_per_second from reactor.realtime_budget b),
    'withheld', (select case when s.is_called then s.last_value else 0 end from reactor.withheld s))
$$;

-- The hand-off, which fires last on every insert. It refuses a payload out of the bounds every row
-- obeys. A row that is pending and due at once then takes a slot from a worker standing by for
-- its type (section 6), in the same statement: it is written already `processing`, locked by that
-- worker, with a lease token and a 5 s lease, and `started_at` null until the worker confirms it.
-- The insert's Realtime event is all the worker needs to start the handler. A pending row no
-- standby worker could take names one worker standing by for its type in `locked_by`, its herald,
-- which claims it or sets a timer for its run_at (on a pending row `locked_by` means only that).
-- Each worker hears only the rows that name it, so a job costs one Realtime message however many
-- workers run. Past reactor's Realtime budget for the second, the first row still names a herald,
-- whose one claim sweeps the backlog, and the rows after it name nobody and cost nothing. One
-- owner's rows get a share of that budget, per_owner_per_second in the last second: past it, the
-- next row names a herald and the rows after it nobody, so no user's burst spends the messages
-- that announce everyone else's jobs. Rows without an owner (the project's own) have no share.
-- An insert that finds every offer with a free slot held by another transaction waits for one
-- at most standby_lock_wait(); the slot it takes counts in the offer's `handed`.
create or replace function reactor.hand_off() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  taker text;
  herald text;
  n bigint;
  budget integer;
  paused boolean;
  duplicate bigint;
  unique_seconds integer;
  share integer;
  owned bigint;  -- the owner's rows in the last second, this one not counted; null: no owner
  lock_wait text;
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
  end if;
  if new.unique_key is not null and new.status in ('pending', 'processing') then
    -- Inserts of the same key wait on each other here, so the second sees the first committed.
    perform pg_advisory_xact_lock(hashtextextended(
      concat_ws(':', tg_table_name, new.job_type, new.user_id::text, new.unique_key), 0));
    select w.seconds into unique_seconds from reactor.unique_windows w
    where w.job_table = tg_table_name and w.job_type = new.job_type;
    if unique_seconds is null then
      execute format($q$
        select j.id from public.%I j
        where j.job_type = $1 and j.unique_key = $2 and j.user_id is not distinct from $3
          and j.status in ('pending', 'processing')
        limit 1
      $q$, tg_table_name) using new.job_type, new.unique_key, new.user_id into duplicate;
    else
      -- The type's window: a key stays taken for that long after its job was inserted, whatever
      -- became of the job, and while the job is pending or running.
      execute format($q$
        select j.id from public.%I j
        where j.job_type = $1 and j.unique_key = $2 and j.user_id is not distinct from $3
          and (j.status in ('pending', 'processing') or j.created_at > now() - make_interval(secs => $4))
        order by j.id desc limit 1
      $q$, tg_table_name) using new.job_type, new.unique_key, new.user_id, unique_seconds into duplicate;
    end if;
    if duplicate is not null then
      raise exception 'a % job with unique_key % is already pending or running%: job %',
        new.job_type, new.unique_key,
        case when unique_seconds is not null then format(', or was inserted in the last %s s', unique_seconds) else '' end,
        duplicate
        using errcode = '23505', detail = jsonb_build_object('id', duplicate)::text,
              hint = 'the existing job''s id is in the details; watch it instead';
    end if;
  end if;
  if new.status <> 'pending' then
    return new;
  end if;
  -- A type with limits is claimed, never handed off: the claim holds its limits; a paused one is
  -- not even announced.
  select l.paused into paused from reactor.job_limits l
  where l.job_table = tg_table_name and l.job_type = new.job_type;
  if paused then
    return new;
  end if;
  if new.user_id is not null then
    share := (select b.per_owner_per_second from reactor.realtime_budget b);
    execute format($q$
      select count(*) from (select 1 from public.%I
                            where user_id = $1 and created_at > now() - interval '1 second' limit $2) s
    $q$, tg_table_name) using new.user_id, share + 1 into owned;
  end if;
  if new.run_at <= now() and paused is null and coalesce(owned < share, true) then
    select s.worker into taker from reactor.standby s
    where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
      and new.job_type = any(s.job_types)
    order by s.slots desc
    limit 1
    for update skip locked;
    if taker is null and exists (
      select 1 from reactor.standby s
      where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
        and new.job_type = any(s.job_types)
    ) then
      -- Every offer with a free slot is held, by a claim renewing it or an insert taking a slot:
      -- wait standby_lock_wait() for one, and past that leave the row to be claimed.
      lock_wait := current_setting('lock_timeout');
      begin
        perform set_config('lock_timeout', reactor.standby_lock_wait(), true);
        select s.worker into taker from reactor.standby s
        where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
          and new.job_type = any(s.job_types)
        order by s.slots desc
        limit 1
        for update;
        perform set_config('lock_timeout', lock_wait, true);
      exception when lock_not_available then
        taker := null;
      end;
    end if;
  end if;
  if taker is null then
    select s.worker into herald from reactor.standby s
    where s.job_table = tg_table_name and s.expires_at > now() and new.job_type = any(s.job_types)
    order by s.slots desc, s.expires_at desc
    limit 1;
  end if;
  if coalesce(taker, herald) is null then
    return new;
  end if;
  if owned > share then
    perform nextval('reactor.withheld');
    return new;
  end if;
  n := reactor.announcement();
  budget := (select b.messages_per_second from reactor.realtime_budget b);
  if n > budget + 1 then
    perform nextval('reactor.withheld');
    return new;
  end if;
  -- The second's first insert over the budget names a herald even when a worker has a free slot:
  -- its one claim takes the inserts withheld after it too, as far as the herald has slots.
  if taker is null or n > budget then
    new.locked_by := coalesce(herald, taker);
    return new;
  end if;
  update reactor.standby s set slots = s.slots - 1, handed = s.handed + 1
  where s.job_table = tg_table_name and s.worker = taker;
  -- clock_timestamp(): the insert's transaction may have started long before this row.
  new.status := 'processing';
  new.attempts := new.attempts + 1;
  new.locked_by := taker;
  new.lease_token := gen_random_uuid();
  new.lease_expires_at := clock_timestamp() + interval '5 seconds';
  new.started_at := null;
  return new;
end
$$;

-- The private Realtime topic of worker p_worker.
create or replace function reactor.worker_topic(p_worker text) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select 'reactor:' || left(encode(sha256(convert_to(k.key::text || ':' || p_worker, 'UTF8')), 'hex'), 32)
  from reactor.topic_key k
$$;

-- After an insert that names a worker in `locked_by` (a hand-off, a herald's pending job, a probe
-- or a cancel signal), broadcast the row as event `job` to that worker's topic, in the inserting
-- transaction: a rollback sends nothing. A pending row goes without its payload, which the herald
-- does not need. It runs as its owner, since realtime.send writes to realtime.messages under RLS
-- and the inserting user may write nothing there; where Realtime's schema is missing (a plain
-- Postgres), nothing is sent.
create or replace function reactor.announce() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  record jsonb := to_jsonb(new);
begin
  if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
    return null;
  end if;
  if new.status = 'pending' or pg_column_size(new.payload) > reactor.max_announced_payload_bytes()
     or octet_length(new.payload::text) > reactor.max_announced_payload_bytes() then
    record := record - 'payload';
  end if;
  perform realtime.send(jsonb_build_object('table', tg_table_name, 'record', record), 'job',
                        reactor.worker_topic(new.locked_by), true);
  return null;
end
$$;


-- ==== 6. Claim and hand-off ====
--
-- A worker with free slots and a live Realtime subscription says so with every claim: a row in
-- reactor.standby with its job types and free slots, which inserts take jobs' slots from
-- (reactor.hand_off). Realtime is still a hint. A hand-off's lease is short (5 s) and its
-- `started_at` stays null until the worker confirms it with a heartbeat, which it sends at once. A
-- hand-off nobody confirmed (the event was lost, the worker died or lost its socket) is reaped
-- like any expired lease, but goes back to `pending` at once and gives its attempt back: the
-- handler may never have run.
--
-- Standby rows are only ever locked briefly: an insert holds the row it took a slot from until its
-- transaction commits, a claim holds its worker's row until it commits, and an insert or a claim
-- that finds the row it needs held waits for it at most standby_lock_wait(), then goes on without.

-- Offer p_slots slots of p_table to hand-offs until p_seconds from now; 0 seconds withdraws the
-- offer. A row some insert holds is left alone (a claim first waits standby_lock_wait() for it):
-- that insert is taking one of its slots. Without p_refill the offer is only renewed, never raised
-- or made: a tick does that, and a tick also runs while the Realtime feed is silent without the
-- worker knowing yet, when jobs handed to it would wait out their hand-off lease. Claims that
-- follow a Realtime event refill. A tick also deletes the table's standby rows that expired more
-- than a minute ago, which every hand-off would otherwise read past.
-- A claim renews an offer whenever the worker asks, also while hand-offs from it are on their way:
-- with p_heard, the hand-offs the worker has heard of in the table, the offer is p_slots less
-- those made (`handed`) that the worker had not heard of, so no slot is offered twice. The count
-- starts at the worker's own when the offer is made, and follows it up when it is ahead.
create or replace function reactor.stand_by(
  p_table text, p_worker text, p_job_types text[], p_slots integer, p_seconds integer, p_refill boolean,
  p_heard bigint default null
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  held reactor.standby;
  in_flight bigint := 0;
  unconfirmed bigint;
  now_exactly timestamptz;
  lock_wait text;
begin
  if not p_refill then
    delete from reactor.standby s where s.ctid = any(array(
      select e.ctid from reactor.standby e
      where e.job_table = p_table and e.expires_at < now() - interval '1 minute'
      for update skip locked));
  end if;
  select * into held from reactor.standby s where s.job_table = p_table and s.worker = p_worker for update skip locked;
  if held.worker is null and p_refill
     and exists (select 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker) then
    -- An insert holds the offer, taking a slot: wait for it standby_lock_wait(), as an insert
    -- waits for a renewing claim, and past that leave the offer as it is.
    lock_wait := current_setting('lock_timeout');
    begin
      perform set_config('lock_timeout', reactor.standby_lock_wait(), true);
      select * into held from reactor.standby s where s.job_table = p_table and s.worker = p_worker for update;
      perform set_config('lock_timeout', lock_wait, true);
    exception when lock_not_available then
      held := null;
    end;
  end if;
  if held.worker is not null then
    if p_seconds > 0 then
      if p_refill and p_heard is not null and held.handed > p_heard then
        -- Hand-offs the worker had not heard of when it asked: as many as are still unconfirmed and
        -- within their 5 s lease (one lost on the way counts no more once that lease ends).
        now_exactly := clock_timestamp();
        execute format($q$
          select count(*) from public.%I j
          where j.status = 'processing' and j.lease_expires_at > $1 and j.lease_expires_at <= $2
            and j.locked_by = $3 and j.started_at is null
        $q$, p_table) using now_exactly, now_exactly + interval '5 seconds', p_worker into unconfirmed;
        in_flight := least(held.handed - p_heard, unconfirmed);
      end if;
      update reactor.standby s
      set job_types = p_job_types, expires_at = now() + make_interval(secs => p_seconds),
          slots = case when p_refill then greatest(p_slots - in_flight, 0) else least(s.slots, p_slots) end,
          handed = greatest(s.handed, coalesce(p_heard, s.handed))
      where s.job_table = p_table and s.worker = p_worker;
    else
      delete from reactor.standby s where s.job_table = p_table and s.worker = p_worker;
    end if;
  elsif p_seconds > 0 and p_refill
        and not exists (select 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker) then
    insert into reactor.standby (job_table, worker, job_types, slots, expires_at, handed)
    values (p_table, p_worker, p_job_types, p_slots, now() + make_interval(secs => p_seconds), coalesce(p_heard, 0))
    on conflict do nothing;
  end if;
end
$$;

-- Claim up to p_limit due, pending jobs of the given types, highest priority first, then oldest
-- run_at, through the table's claim function; then the worker's standby: p_standby_seconds > 0
-- offers the slots this claim left free (p_limit less the jobs it returns, at most
-- max_standby_slots()) for that long; 0 withdraws any offer; null leaves it as it is.
-- A claim does not wait for its WAL flush (docs/benchmarks.md): if the server crashes before the
-- claim reaches the disk, the job is back to `pending` with its attempts unspent, the worker's
-- outcome for it is refused as stale, and the job runs again, as at-least-once delivery allows.
-- Outcomes and heartbeats commit synchronously (unless the server says otherwise), and any of
-- them flushes the claims before it.
-- Claim up to p_limit due jobs of the limited type p_job_type from p_table, within its limits
-- (reactor.job_limits), taking the type's row lock so that concurrent claims of it never both see
-- room for the same slot. With per_user, owners take turns within each priority.
create or replace function reactor.claim_within_limits(
  p_table text, p_job_type text, p_worker text, p_limit integer, p_lease_seconds integer
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
)
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  lim reactor.job_limits;
  room integer := p_limit;
  running bigint;
  recent timestamptz[];
  picked bigint[];
begin
  select * into lim from reactor.job_limits l
  where l.job_table = p_table and l.job_type = p_job_type
  for update;
  if not found or lim.paused then
    return;
  end if;
  if lim.concurrency is not null then
    execute format('select count(*) from public.%I j where j.status = ''processing'' and j.job_type = $1', p_table)
      using p_job_type into running;
    room := least(room, lim.concurrency - running);
  end if;
  if lim.rate is not null then
    recent := array(select s from unnest(lim.starts) s
                    where s > now() - make_interval(secs => lim.per_seconds) order by s);
    room := least(room, lim.rate - cardinality(recent));
  end if;
  if room <= 0 then
    return;
  end if;
  if lim.per_user is null then
    execute format($q$
      select array_agg(c.id) from (
        select j.id from public.%1$I j
        where j.status = 'pending' and j.job_type = $1 and j.run_at <= now()
        order by j.priority desc, j.run_at, j.id
        limit $2
        for update skip locked
      ) c
    $q$, p_table) using p_job_type, room into picked;
  else
    -- Round-robin by owner within each priority: every owner's first due job, then every owner's
    -- second, as far as each owner's room (per_user less its jobs processing) goes.
    execute format($q$
      with busy as (
        select j.user_id, count(*) n from public.%1$I j
        where j.status = 'processing' and j.job_type = $1
        group by j.user_id
      ), ranked as (
        select j.id, j.priority, j.run_at, coalesce(b.n, 0) busy,
               row_number() over (partition by j.user_id order by j.priority desc, j.run_at, j.id) turn
        from public.%1$I j left join busy b on b.user_id is not distinct from j.user_id
        where j.status = 'pending' and j.job_type = $1 and j.run_at <= now()
      )
      select array_agg(c.id) from (
        select j.id from public.%1$I j join ranked r on r.id = j.id
        where j.status = 'pending' and r.turn <= $3 - r.busy
        order by r.priority desc, r.turn, r.run_at, r.id
        limit $2
        for update of j skip locked
      ) c
    $q$, p_table) using p_job_type, room, lim.per_user into picked;
  end if;
  if picked is null then
    return;
  end if;
  if lim.rate is not null then
    update reactor.job_limits l
    set starts = array(select x.s from (
                   select s from unnest(recent || array_fill(now(), array[cardinality(picked)])) s
                   order by s desc limit lim.rate) x order by x.s)
    where l.job_table = p_table and l.job_type = p_job_type;
  end if;
  return query execute format($q$
    update public.%1$I j
    set status = 'processing', attempts = j.attempts + 1, locked_by = $2,
        lease_expires_at = now() + make_interval(secs => $3),
        lease_token = gen_random_uuid(), started_at = now(), updated_at = now()
    where j.id = any($1)
    returning j.id, j.job_type, j.payload, j.priority, j.attempts, j.max_attempts, j.lease_token,
              j.lease_expires_at, j.run_at, j.created_at, j.started_at, j.user_id, j.resumed, j.parent_id
  $q$, p_table) using picked, p_worker, p_lease_seconds;
end
$$;


-- The claim: the limited types first, each within its limits (claim_within_limits), then the
-- others; then the standby, with the worker's count of hand-offs heard (reactor.stand_by).
create or replace function reactor.claim_and_stand_by(
  p_table text, p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer,
  p_standby_seconds integer, p_heard bigint
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
)
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  n integer := 0;
  k integer;
  limited text[];
  unlimited text[];
  lt text;
begin
  perform set_config('synchronous_commit', 'off', true);
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  perform reactor.check_job_types(p_job_types);
  if p_standby_seconds is not null then
    perform reactor.check_range('p_standby_seconds', p_standby_seconds, 0, 3600);
  end if;
  select coalesce(array_agg(l.job_type order by l.job_type), '{}') into limited
  from reactor.job_limits l where l.job_table = t and l.job_type = any(p_job_types);
  foreach lt in array limited loop
    exit when n >= p_limit;
    return query select * from reactor.claim_within_limits(t, lt, p_worker, p_limit - n, p_lease_seconds);
    get diagnostics k = row_count;
    n := n + k;
  end loop;
  unlimited := array(select x from unnest(p_job_types) x where x <> all(limited));
  if n < p_limit and cardinality(unlimited) > 0 then
    return query execute format('select * from reactor.%I($1, $2, $3, $4)', 'claim_due_' || t)
      using p_worker, unlimited, p_limit - n, p_lease_seconds;
    get diagnostics k = row_count;
    n := n + k;
  end if;
  if p_standby_seconds is not null then
    perform reactor.stand_by(t, p_worker, p_job_types, least(p_limit - n, reactor.max_standby_slots()),
                             p_standby_seconds, true, p_heard);
  end if;
end
$$;

-- The claim without a count of hand-offs heard: the tick's, and reactor_claim's and
-- reactor_claim_batch's for callers that never stand by or count nothing.
create or replace function reactor.claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
)
language sql volatile set search_path = pg_catalog, pg_temp as $$
  select * from reactor.claim_and_stand_by(p_table, p_worker, p_job_types, p_limit, p_lease_seconds,
                                           p_standby_seconds, null)
$$;


-- The claim as rows (reactor_claim_jobs is the worker's): the rows of reactor.claim without
-- `resumed` and `parent_id`, as before they existed.
create or replace function public.reactor_claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select c.id, c.job_type, c.payload, c.priority, c.attempt, c.max_attempts, c.lease_token,
         c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id
  from reactor.claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, p_standby_seconds) c
$$;

-- The same claim as one jsonb array, in claim order: PostgREST's Max rows cuts the rows of a
-- set-returning function after it ran, which would leave jobs leased that the worker never got;
-- no cap cuts one value. The worker calls this one.
create or replace function public.reactor_claim_batch(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns jsonb
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', c.id, 'job_type', c.job_type, 'payload', c.payload, 'priority', c.priority,
           'attempt', c.attempt, 'max_attempts', c.max_attempts, 'lease_token', c.lease_token,
           'run_at', c.run_at, 'created_at', c.created_at, 'user_id', c.user_id,
           'resumed', c.resumed, 'parent_id', c.parent_id
         ) order by c.ordinality), '[]')
  from reactor.claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, p_standby_seconds)
       with ordinality as c
$$;

-- The worker's claim: reactor_claim_batch's array built as json rather than jsonb, which cost more
-- than the claim itself (docs/benchmarks.md, "Where a no-op job's CPU went"). A function's return
-- type cannot change in place, hence the new name; reactor_claim_batch stays for workers of
-- earlier versions during a rolling upgrade. p_heard is the worker's count of the hand-offs it
-- has heard of in the table, which its standby's renewal needs (reactor.stand_by); a worker of an
-- earlier version sends none, and its standby is renewed as before.
create or replace function public.reactor_claim_jobs(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0, p_heard bigint default null
) returns json
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(json_agg(json_build_object(
           'id', c.id, 'job_type', c.job_type, 'payload', c.payload, 'priority', c.priority,
           'attempt', c.attempt, 'max_attempts', c.max_attempts, 'lease_token', c.lease_token,
           'run_at', c.run_at, 'created_at', c.created_at, 'user_id', c.user_id,
           'resumed', c.resumed, 'parent_id', c.parent_id
         ) order by c.ordinality), '[]')
  from reactor.claim_and_stand_by(p_table, p_worker, p_job_types, p_limit, p_lease_seconds,
                                  p_standby_seconds, p_heard)
       with ordinality as c
$$;

-- Withdraw a worker's standby (it is stopping). Waits at most 2 s for an insert holding the row.
create or replace function public.reactor_stand_down(p_table text, p_worker text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  perform reactor.check_worker(p_worker);
  perform set_config('lock_timeout', '2s', true);
  delete from reactor.standby s where s.job_table = t and s.worker = p_worker;
end
$$;

-- The topic a worker subscribes to, for the worker itself; it names what is missing on a
-- database without Realtime's schema.
create or replace function public.reactor_worker_topic(p_worker text) returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform reactor.check_worker(p_worker);
  if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
    raise exception 'this database has no realtime.send(), so it cannot announce jobs over Realtime'
      using hint = 'reactor needs Supabase Realtime (Broadcast from Database); run the worker with REACTOR_REALTIME=off to poll instead.';
  end if;
  return reactor.worker_topic(p_worker);
end
$$;

-- Extend the leases of running jobs, and confirm hand-offs: their `started_at` is set.
-- Returns {"extended": [ids], "stale": [ids]}, with "cancelled": [ids] for the stale leases of
-- jobs that were cancelled.
create or replace function public.reactor_heartbeat(
  p_table text, p_leases jsonb, p_lease_seconds integer default 60
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
  stale jsonb;
  cancelled jsonb;
begin
  perform reactor.check_lease_seconds(p_lease_seconds);
  execute format($q$
    with hit as (
      update public.%1$I j
      set lease_expires_at = now() + make_interval(secs => $1), updated_at = now(),
          started_at = coalesce(j.started_at, now())
      from reactor.batch_items($2, 'lease') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_lease_seconds, p_leases into done;
  stale := reactor.stale_ids(p_leases, done);
  if stale <> '[]' then
    -- Which of them were cancelled: the worker stops those as cancelled, not as taken over.
    execute format($q$
      select jsonb_agg(j.id order by j.id) from public.%I j
      where j.id in (select x::bigint from jsonb_array_elements_text($1) x) and j.status = 'cancelled'
    $q$, t) using stale into cancelled;
  end if;
  return jsonb_build_object('extended', to_jsonb(done), 'stale', stale)
         || case when cancelled is not null then jsonb_build_object('cancelled', cancelled) else '{}' end;
end
$$;


-- ==== 7. Outcomes ====

-- Finish running jobs with their results. Returns {"completed": [ids], "stale": [ids]}, with
-- "resumed": n when this call finished the last child of n waiting parents (job_finished).
create or replace function public.reactor_complete(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  perform reactor.resumed_answer();
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'completed', result = i.result, progress = 100, completed_at = now(),
          lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'complete') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_jobs into done;
  return jsonb_build_object('completed', to_jsonb(done), 'stale', reactor.stale_ids(p_jobs, done))
         || reactor.resumed_answer();
end
$$;

-- Record failed attempts. Each job goes back to pending at its retry_at (default: backoff), kept
-- from now to the bounds every row's run_at obeys, or to `failed` (the dead letter) when it is
-- permanent or its attempts are spent. Returns {"retried": [ids], "failed": [ids], "stale": [ids]}
-- (and "resumed" as reactor_complete's).
create or replace function public.reactor_fail(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  retried bigint[];
  dead bigint[];
begin
  perform reactor.resumed_answer();
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = case when i.permanent or j.attempts >= j.max_attempts then 'failed' else 'pending' end,
          run_at = case when i.permanent or j.attempts >= j.max_attempts then j.run_at
                        else least(greatest(coalesce(i.retry_at, now() + reactor.backoff(j.attempts)), now()),
                                   '2199-12-31 00:00:00+00') end,
          completed_at = case when i.permanent or j.attempts >= j.max_attempts then now() end,
          last_error = i.error, locked_by = null, lease_token = null, lease_expires_at = null,
          updated_at = now()
      from reactor.batch_items($1, 'fail') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id, j.status
    ) select coalesce(array_agg(id order by id) filter (where status = 'pending'), '{}'),
             coalesce(array_agg(id order by id) filter (where status = 'failed'), '{}')
      from hit
  $q$, t) using p_jobs into retried, dead;
  return jsonb_build_object('retried', to_jsonb(retried), 'failed', to_jsonb(dead),
                            'stale', reactor.stale_ids(p_jobs, retried || dead))
         || reactor.resumed_answer();
end
$$;

-- Put jobs back to `pending` until their retry_at (now when absent) without spending the attempt
-- they ran under: a handler that has to wait for something (Snooze) does not use up its retries.
-- Items as reactor_fail takes them ({id, lease_token, error, retry_at}; the error says why, for the
-- worker's log, and is not stored: the job did not fail); only the lease's holder can.
-- Returns {"snoozed": [ids], "stale": [ids]}.
create or replace function public.reactor_snooze(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'pending', attempts = greatest(j.attempts - 1, 0),
          run_at = least(greatest(coalesce(i.retry_at, now()), now()), '2199-12-31 00:00:00+00'),
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'fail') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_jobs into done;
  return jsonb_build_object('snoozed', to_jsonb(done), 'stale', reactor.stale_ids(p_jobs, done));
end
$$;

-- A running job spawns children: p_children is a JSON array of {job_type, key, payload, priority,
-- run_at, max_attempts} (job_type and key required; the others default to {}, the parent's
-- priority, now and the table's default). Children belong to the parent's owner. A key the parent
-- used before returns that child and makes no new one, so a parent run again spawns nothing twice.
-- Only the lease's holder spawns, and a parent has at most reactor.max_children() children.
-- Returns {"ids": [child ids, in the order asked]} or {"stale": true} for a stale lease.
create or replace function public.reactor_spawn(
  p_table text, p_parent bigint, p_lease_token uuid, p_children jsonb
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  owner uuid;
  parent_priority integer;
  n integer;
  ids jsonb;
begin
  if jsonb_typeof(p_children) is distinct from 'array' then
    raise exception 'p_children must be a JSON array of children' using errcode = '22023';
  end if;
  perform reactor.check_range('number of children', jsonb_array_length(p_children), 1, reactor.max_children());
  if exists (select 1 from jsonb_array_elements(p_children) c
             where jsonb_typeof(c) is distinct from 'object'
                or jsonb_typeof(c -> 'job_type') is distinct from 'string'
                or jsonb_typeof(c -> 'key') is distinct from 'string') then
    raise exception 'each child must be an object with a job_type and a key, both text' using errcode = '22023';
  end if;
  execute format($q$
    select user_id, priority from public.%I where id = $1 and lease_token = $2 and status = 'processing'
    for update
  $q$, t) using p_parent, p_lease_token into owner, parent_priority;
  get diagnostics n = row_count;
  if n = 0 then
    return jsonb_build_object('stale', true);
  end if;
  execute format($q$
    insert into public.%1$I (job_type, payload, priority, run_at, max_attempts, user_id, parent_id, child_key)
    select c.job_type, coalesce(c.payload, '{}'), coalesce(c.priority, $3),
           greatest(coalesce(c.run_at, now()), now()), coalesce(c.max_attempts, 5), $2, $1, c.key
    from jsonb_to_recordset($4) as c(job_type text, key text, payload jsonb, priority integer,
                                     run_at timestamptz, max_attempts integer)
    on conflict (parent_id, child_key) where parent_id is not null do nothing
  $q$, t) using p_parent, owner, parent_priority, p_children;
  execute format('select count(*) from public.%I where parent_id = $1', t) using p_parent into n;
  if n > reactor.max_children() then
    raise exception 'job % would have % children; a job has at most %', p_parent, n, reactor.max_children()
      using errcode = '22023';
  end if;
  execute format($q$
    select jsonb_agg(j.id order by c.ordinality)
    from jsonb_array_elements($2) with ordinality as c(item, ordinality)
    join public.%I j on j.parent_id = $1 and j.child_key = c.item ->> 'key'
  $q$, t) using p_parent, p_children into ids;
  return jsonb_build_object('ids', ids);
end
$$;

-- Running jobs wait for their children: items {id, lease_token}. A job with unfinished children
-- becomes `waiting` (job_finished wakes it); one whose children have all finished goes back to
-- `pending` at once, resumed. Either way its attempt is given back: waiting is not failing.
-- Returns {"waiting": [ids], "resumed": [ids], "stale": [ids]}.
create or replace function public.reactor_wait(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  item record;
  n integer;
  open boolean;
  waiting bigint[] := '{}';
  resumed bigint[] := '{}';
begin
  for item in select * from reactor.batch_items(p_jobs, 'lease') loop
    execute format('select 1 from public.%I where id = $1 and lease_token = $2 and status = ''processing'' for update', t)
      using item.id, item.lease_token;
    get diagnostics n = row_count;
    continue when n = 0;
    execute format($q$select exists (select 1 from public.%I where parent_id = $1
                                     and status in ('pending', 'processing', 'waiting'))$q$, t)
      using item.id into open;
    execute format($q$
      update public.%1$I j
      set status = case when $2 then 'waiting' else 'pending' end, run_at = case when $2 then j.run_at else now() end,
          resumed = j.resumed + case when $2 then 0 else 1 end, attempts = greatest(j.attempts - 1, 0),
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      where j.id = $1
    $q$, t) using item.id, open;
    if open then
      waiting := waiting || item.id;
    else
      resumed := resumed || item.id;
    end if;
  end loop;
  return jsonb_build_object('waiting', to_jsonb(waiting), 'resumed', to_jsonb(resumed),
                            'stale', reactor.stale_ids(p_jobs, waiting || resumed));
end
$$;

-- A job's children, in the order they were spawned: {id, key, job_type, status, attempts, result,
-- last_error, completed_at} each, at most reactor.max_children(). Returns {"children": [...]}.
create or replace function public.reactor_children(p_table text, p_parent bigint) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  children jsonb;
begin
  execute format($q$
    select coalesce(jsonb_agg(jsonb_build_object(
             'id', c.id, 'key', c.child_key, 'job_type', c.job_type, 'status', c.status,
             'attempts', c.attempts, 'result', c.result, 'last_error', c.last_error,
             'completed_at', c.completed_at) order by c.id), '[]')
    from (select * from public.%I where parent_id = $1 order by id limit reactor.max_children()) c
  $q$, t) using p_parent into children;
  return jsonb_build_object('children', children);
end
$$;

-- Write running jobs' log lines: p_lines is a JSON array of {id, lease_token, level, message,
-- logged_at?}, level one of debug, info, warning, error, message cut to 2,000 characters,
-- logged_at (default now) never later than now. Lines of a job whose lease the caller does not
-- hold are not written; nor are a job's lines beyond reactor.max_log_lines().
-- Returns {"written": n, "dropped": n (over the cap), "stale": [ids]}.
create or replace function public.reactor_log(p_table text, p_lines jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  problem text;
  held bigint[];
  written bigint;
begin
  if p_lines is null or jsonb_typeof(p_lines) <> 'array' then
    raise exception 'p_lines must be a JSON array of lines' using errcode = '22023';
  end if;
  perform reactor.check_range('number of lines', jsonb_array_length(p_lines), 1, reactor.max_batch());
  select format('line %s: %s', x.o, case
      when jsonb_typeof(x.e) <> 'object' then 'must be a JSON object'
      when jsonb_typeof(x.e -> 'id') is distinct from 'number' or scale((x.e -> 'id')::numeric) <> 0
           or (x.e -> 'id')::numeric not between 1 and 999999999999999999 then 'id must be a positive integer'
      when jsonb_typeof(x.e -> 'lease_token') is distinct from 'string'
           or not reactor.casts_to_uuid(x.e ->> 'lease_token') then 'lease_token is not a UUID'
      when coalesce(x.e ->> 'level', '') not in ('debug', 'info', 'warning', 'error')
        then 'level must be debug, info, warning or error'
      when jsonb_typeof(x.e -> 'message') is distinct from 'string' then 'message must be text'
      when coalesce(jsonb_typeof(x.e -> 'logged_at'), 'null') <> 'null'
           and not reactor.casts_to_timestamptz(x.e ->> 'logged_at') then 'logged_at must be an ISO 8601 timestamp'
    end) into problem
  from jsonb_array_elements(p_lines) with ordinality as x(e, o)
  where jsonb_typeof(x.e) <> 'object'
     or jsonb_typeof(x.e -> 'id') is distinct from 'number' or scale((x.e -> 'id')::numeric) <> 0
     or (x.e -> 'id')::numeric not between 1 and 999999999999999999
     or jsonb_typeof(x.e -> 'lease_token') is distinct from 'string'
     or not reactor.casts_to_uuid(x.e ->> 'lease_token')
     or coalesce(x.e ->> 'level', '') not in ('debug', 'info', 'warning', 'error')
     or jsonb_typeof(x.e -> 'message') is distinct from 'string'
     or (coalesce(jsonb_typeof(x.e -> 'logged_at'), 'null') <> 'null'
         and not reactor.casts_to_timestamptz(x.e ->> 'logged_at'))
  order by x.o limit 1;
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
  end if;
  execute format($q$
    with line as (
      select (x.e ->> 'id')::bigint id, (x.e ->> 'lease_token')::uuid lease_token, x.e ->> 'level' level,
             left(x.e ->> 'message', 2000) message,
             least(coalesce((x.e ->> 'logged_at')::timestamptz, now()), now()) logged_at, x.o
      from jsonb_array_elements($1) with ordinality as x(e, o)
    ), holder as (
      select j.id, j.user_id, j.attempts from public.%1$I j
      where j.id in (select distinct l.id from line l) and j.status = 'processing'
        and j.lease_token = (select l.lease_token from line l where l.id = j.id order by l.o limit 1)
    ), room as (
      select h.*, reactor.max_log_lines() - (
               select count(*) from (select 1 from public.job_logs g
                                     where g.job_table = $2 and g.job_id = h.id
                                     limit reactor.max_log_lines()) n) room
      from holder h
    ), kept as (
      select l.*, r.user_id, r.attempts,
             row_number() over (partition by l.id order by l.o) k, r.room
      from line l join room r on r.id = l.id
    ), ins as (
      insert into public.job_logs (job_table, job_id, user_id, attempt, level, message, logged_at)
      select $2, k.id, k.user_id, k.attempts, k.level, k.message, k.logged_at
      from kept k where k.k <= k.room order by k.o
      returning 1
    )
    select (select array_agg(id) from holder), (select count(*) from ins)
  $q$, t) using p_lines, t into held, written;
  return jsonb_build_object(
    'written', written,
    'dropped', (select count(*) from jsonb_array_elements(p_lines) e
                where (e ->> 'id')::bigint = any(coalesce(held, '{}'))) - written,
    'stale', coalesce((select jsonb_agg(s.id order by s.id) from (
                         select distinct (e ->> 'id')::bigint id from jsonb_array_elements(p_lines) e
                         where not (e ->> 'id')::bigint = any(coalesce(held, '{}'))) s), '[]'));
end
$$;

-- Hand running jobs back without spending an attempt (graceful shutdown).
-- Returns {"released": [ids], "stale": [ids]}.
create or replace function public.reactor_release(p_table text, p_leases jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'pending', attempts = greatest(j.attempts - 1, 0), started_at = null,
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'lease') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_leases into done;
  return jsonb_build_object('released', to_jsonb(done), 'stale', reactor.stale_ids(p_leases, done));
end
$$;

-- Write a running job's progress (0-100) and a short message. False when the lease is stale.
create or replace function public.reactor_progress(
  p_table text, p_id bigint, p_lease_token uuid, p_progress integer, p_message text default null
) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  hit boolean;
begin
  perform reactor.check_range('p_progress', p_progress, 0, 100);
  if p_lease_token is null then
    raise exception 'p_lease_token is missing';
  end if;
  execute format($q$
    update public.%1$I set progress = $1, progress_message = left($2, 1000), updated_at = now()
    where id = $3 and lease_token = $4 and status = 'processing'
  $q$, t) using p_progress, p_message, p_id, p_lease_token;
  get diagnostics hit = row_count;
  return hit;
end
$$;


-- ==== 8. Maintenance ====

-- Reclaim jobs whose lease expired: back to pending after a backoff, or `failed` when their
-- attempts are spent. The attempt was counted at claim, so a job that kills every worker ends in
-- `failed` after max_attempts. A hand-off nobody confirmed (started_at is null) goes back to
-- pending at once, with its attempt given back and no error: its handler may never have run. Rows
-- another reaper holds are skipped, so concurrent reapers never handle a job twice.
-- Returns {"requeued": [ids], "failed": [ids]}.
create or replace function public.reactor_reap(p_table text, p_limit integer default 1000) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  requeued bigint[];
  dead bigint[];
begin
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  execute format($q$
    with expired as (
      select j.id, j.started_at is null as unconfirmed,
             j.started_at is not null and j.attempts >= j.max_attempts as spent
      from public.%1$I j
      where j.status = 'processing' and j.lease_expires_at < now()
      order by j.lease_expires_at
      limit $1
      for update skip locked
    ), hit as (
      update public.%1$I j
      set status = case when e.spent then 'failed' else 'pending' end,
          attempts = case when e.unconfirmed then greatest(j.attempts - 1, 0) else j.attempts end,
          run_at = case when e.unconfirmed or e.spent then j.run_at else now() + reactor.backoff(j.attempts) end,
          completed_at = case when e.spent then now() end,
          last_error = case when e.unconfirmed then j.last_error
                       else format('lease expired: worker %%s stopped reporting during attempt %%s of %%s%%s',
                                   j.locked_by, j.attempts, j.max_attempts,
                                   case when e.spent then '; attempts exhausted' else '' end) end,
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from expired e
      where j.id = e.id
      returning j.id, j.status
    ) select coalesce(array_agg(id order by id) filter (where status = 'pending'), '{}'),
             coalesce(array_agg(id order by id) filter (where status = 'failed'), '{}')
      from hit
  $q$, t) using p_limit into requeued, dead;
  return jsonb_build_object('requeued', to_jsonb(requeued), 'failed', to_jsonb(dead));
end
$$;

-- Each limited job type of p_table: its limits as set, its running jobs, and for a rate the starts
-- in its current window (for reactor_stats and reactor_overview, and so a worker's /metrics).
create or replace function reactor.limits_state(p_table text) returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  found jsonb;
begin
  execute format($q$
    select coalesce(jsonb_object_agg(l.job_type, jsonb_strip_nulls(jsonb_build_object(
             'concurrency', l.concurrency, 'rate', l.rate, 'per_seconds', l.per_seconds,
             'per_user', l.per_user, 'paused', l.paused,
             'running', (select count(*) from public.%1$I j
                         where j.status = 'processing' and j.job_type = l.job_type),
             'recent_starts', case when l.rate is not null then
               (select count(*) from unnest(l.starts) s
                where s > now() - make_interval(secs => l.per_seconds)) end))), '{}')
    from reactor.job_limits l where l.job_table = $1
  $q$, p_table) using p_table into found;
  return found;
end
$$;

-- Queue health for one table: counts by status, due and scheduled pending jobs, how long the
-- oldest due job has waited, pending jobs by type, leases already expired, the Realtime budget,
-- and each limited job type's limits with its running jobs and a rate's starts in its window.
-- The counts leave out the workers' probe rows, which are always cancelled.
create or replace function public.reactor_stats(p_table text) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  stats jsonb;
begin
  execute format($q$
    select jsonb_build_object(
      'table', $1,
      'counts', (select jsonb_build_object(
                   'pending', count(*) filter (where status = 'pending'),
                   'processing', count(*) filter (where status = 'processing'),
                   'waiting', count(*) filter (where status = 'waiting'),
                   'completed', count(*) filter (where status = 'completed'),
                   'failed', count(*) filter (where status = 'failed'),
                   'cancelled', count(*) filter (where status = 'cancelled'))
                 from public.%1$I where job_type <> reactor.probe_job_type()),
      'due', (select count(*) from public.%1$I where status = 'pending' and run_at <= now()),
      'scheduled', (select count(*) from public.%1$I where status = 'pending' and run_at > now()),
      'oldest_due_age_seconds', (select round(extract(epoch from now() - min(run_at))::numeric, 3)
                                 from public.%1$I where status = 'pending' and run_at <= now()),
      'pending_by_type', (select coalesce(jsonb_object_agg(job_type, n), '{}')
                          from (select job_type, count(*) n from public.%1$I
                                where status = 'pending' group by job_type) s),
      'expired_leases', (select count(*) from public.%1$I
                         where status = 'processing' and lease_expires_at < now()),
      'realtime', reactor.realtime_state(),
      'limits', reactor.limits_state($1)
    )
  $q$, t) using t into stats;
  return stats;
end
$$;

-- About how many rows of p_table have p_status, from the planner's statistics (pg_class.reltuples
-- and the status column's most common values, as ANALYZE, or autovacuum, last saw them); null
-- before the table was ever analyzed.
create or replace function reactor.estimated_count(p_table text, p_status text) returns bigint
language sql stable set search_path = pg_catalog, pg_temp as $$
  select case when c.reltuples < 0 then null
              else round(c.reltuples * coalesce((
                select f.freq from pg_stats s,
                  unnest(s.most_common_vals::text::text[], s.most_common_freqs) as f(val, freq)
                where s.schemaname = 'public' and s.tablename = p_table and s.attname = 'status'
                  and f.val = p_status), 0))::bigint end
  from pg_class c where c.oid = format('public.%I', p_table)::regclass
$$;

-- The queue's health as reactor_stats gives it, for a table of any size: the counts of pending,
-- processing, waiting and failed jobs, due and scheduled, the oldest due, pending by type and
-- expired leases, exact, from partial indexes; completed and cancelled estimated from the
-- planner's statistics (listed in "estimated"); the Realtime budget and the limits as
-- reactor_stats has them; and the workers standing by for hand-offs, idle ones included.
create or replace function public.reactor_overview(p_table text) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  overview jsonb;
begin
  execute format($q$
    select jsonb_build_object(
      'table', $1,
      'counts', jsonb_build_object(
        'pending', (select count(*) from public.%1$I where status = 'pending'),
        'processing', (select count(*) from public.%1$I where status = 'processing'),
        'waiting', (select count(*) from public.%1$I where status = 'waiting'),
        'completed', reactor.estimated_count($1, 'completed'),
        'failed', (select count(*) from public.%1$I where status = 'failed'),
        'cancelled', reactor.estimated_count($1, 'cancelled')),
      'estimated', '["completed", "cancelled"]'::jsonb,
      'due', (select count(*) from public.%1$I where status = 'pending' and run_at <= now()),
      'scheduled', (select count(*) from public.%1$I where status = 'pending' and run_at > now()),
      'oldest_due_age_seconds', (select round(extract(epoch from now() - min(run_at))::numeric, 3)
                                 from public.%1$I where status = 'pending' and run_at <= now()),
      'pending_by_type', (select coalesce(jsonb_object_agg(job_type, n), '{}')
                          from (select job_type, count(*) n from public.%1$I
                                where status = 'pending' group by job_type) s),
      'expired_leases', (select count(*) from public.%1$I
                         where status = 'processing' and lease_expires_at < now()),
      'realtime', reactor.realtime_state(),
      'limits', reactor.limits_state($1),
      'standing_by', (select coalesce(jsonb_agg(jsonb_build_object(
                        'worker', s.worker, 'job_types', s.job_types, 'slots', s.slots,
                        'expires_at', s.expires_at) order by s.worker), '[]')
                      from reactor.standby s where s.job_table = $1 and s.expires_at > now())
    )
  $q$, t) using t into overview;
  return overview;
end
$$;

-- One worker's periodic chores for one table in one request, in this order:
--   1. reap expired leases (as reactor_reap);
--   2. claim up to p_limit due jobs (as reactor.claim; p_limit 0 claims nothing);
--   3. renew the worker's standby for p_standby_seconds (0 withdraws it) without raising it
--      (reactor.stand_by), and delete the table's long-expired standby rows;
--   4. find when the next pending job of these types falls due, in seconds from now, measured on
--      the database's clock so a skewed worker clock cannot make it early or late, so the worker
--      can set a timer instead of waiting for a sweep;
--   5. when p_stats, the queue statistics (as reactor_stats);
--   6. delete the probe row p_old_probe (only if it is a probe row), and when p_probe, insert a
--      new one for this worker; the insert reaches Realtime when this call commits.
-- Returns {"reaped": {...}, "claimed": [rows as reactor.claim returns them],
--          "next_due_seconds": number or null, "stats": {...} or null, "probe": id or null}.
create or replace function public.reactor_tick(
  p_table text, p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer default 60,
  p_stats boolean default false, p_probe boolean default false, p_old_probe bigint default null,
  p_standby_seconds integer default 0
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  reaped jsonb;
  claimed jsonb := '[]';
  next_due double precision;
  rate_due double precision;
  probe bigint;
begin
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 0, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  perform reactor.check_job_types(p_job_types);
  perform reactor.check_range('p_standby_seconds', p_standby_seconds, 0, 3600);
  reaped := public.reactor_reap(p_table);
  if p_limit > 0 then
    select coalesce(jsonb_agg(to_jsonb(c)), '[]') into claimed
    from reactor.claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, null) c;
  end if;
  perform reactor.stand_by(t, p_worker, p_job_types,
                           least(p_limit - jsonb_array_length(claimed), reactor.max_standby_slots()),
                           p_standby_seconds, false);
  execute format($q$
    select extract(epoch from min(run_at) - now()) from public.%1$I
    where status = 'pending' and run_at > now() and job_type = any($1)
  $q$, t) using p_job_types into next_due;
  -- A rate-limited type with due jobs waiting: when its window lets the next claim through.
  execute format($q$
    select extract(epoch from min(l.starts[1] + make_interval(secs => l.per_seconds)) - now())
    from reactor.job_limits l
    where l.job_table = $1 and l.job_type = any($2) and not l.paused and l.rate is not null
      and cardinality(l.starts) >= l.rate
      and exists (select 1 from public.%1$I j
                  where j.status = 'pending' and j.job_type = l.job_type and j.run_at <= now())
  $q$, t) using t, p_job_types into rate_due;
  if rate_due is not null then
    next_due := least(next_due, greatest(rate_due, 0));
  end if;
  if p_old_probe is not null then
    execute format('delete from public.%1$I where id = $1 and job_type = reactor.probe_job_type()', t)
      using p_old_probe;
  end if;
  if p_probe then
    execute format($q$
      insert into public.%1$I (job_type, status, payload, locked_by)
      values (reactor.probe_job_type(), 'cancelled', jsonb_build_object('worker', $1), $1)
      returning id
    $q$, t) using p_worker into probe;
  end if;
  return jsonb_build_object(
    'reaped', reaped,
    'claimed', claimed,
    'next_due_seconds', round(next_due::numeric, 3),
    'stats', case when p_stats then public.reactor_stats(p_table) end,
    'probe', probe,
    'withheld', reactor.realtime_state() -> 'withheld'
  );
end
$$;


-- ==== 9. Operator and owner calls ====

-- Put failed jobs back to pending with fresh attempts: the ones in p_ids, or else every failed
-- job (of p_job_type, when given), at most p_limit. Returns {"retried": [ids]}.
create or replace function public.reactor_retry(
  p_table text, p_ids bigint[] default null, p_job_type text default null, p_limit integer default 1000
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_range('number of ids', cardinality(coalesce(p_ids, '{}')), 0, reactor.max_batch());
  execute format($q$
    with picked as (
      select j.id from public.%1$I j
      where j.status = 'failed' and ($1::bigint[] is null or j.id = any($1))
        and ($2::text is null or j.job_type = $2)
      order by j.id limit $3 for update skip locked
    ), hit as (
      update public.%1$I j
      set status = 'pending', attempts = 0, run_at = now(), completed_at = null, result = null,
          progress = null, progress_message = null, updated_at = now()
      from picked where j.id = picked.id
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_ids, p_job_type, p_limit into done;
  return jsonb_build_object('retried', to_jsonb(done));
end
$$;

-- Cancel pending and running jobs; finished ones are left alone and listed as not cancelled. A
-- running job's row is cancelled at once, its lease token cleared, and a signal row (a probe row
-- naming its worker, with the job's id) tells that worker over Realtime to stop the handler.
-- Returns {"cancelled": [ids], "not_cancelled": [ids]}.
create or replace function public.reactor_cancel(p_table text, p_ids bigint[]) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  if p_ids is null or array_position(p_ids, null) is not null then
    raise exception 'p_ids must list the jobs to cancel';
  end if;
  perform reactor.check_range('number of ids', cardinality(p_ids), 1, reactor.max_batch());
  execute format($q$
    with was as (
      select j.id, j.status, j.locked_by from public.%1$I j
      where j.id = any($1) and j.status in ('pending', 'processing', 'waiting')
      for update
    ), hit as (
      update public.%1$I j
      set status = 'cancelled', completed_at = now(), updated_at = now(),
          lease_token = null, lease_expires_at = null
      from was where j.id = was.id
      returning j.id, was.status, was.locked_by
    ), signals as (
      insert into public.%1$I (job_type, status, payload, locked_by)
      select reactor.probe_job_type(), 'cancelled',
             jsonb_build_object('worker', h.locked_by, 'cancel', h.id), h.locked_by
      from hit h where h.status = 'processing' and h.locked_by is not null
    )
    select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_ids into done;
  return jsonb_build_object('cancelled', to_jsonb(done),
    'not_cancelled', to_jsonb(array(select distinct x from unnest(p_ids) x where not x = any(done) order by x)));
end
$$;

-- Delete finished jobs (completed, failed, cancelled) that finished more than
-- p_older_than_seconds ago, at most p_limit per call. Returns {"pruned": n}.
create or replace function public.reactor_prune(
  p_table text, p_older_than_seconds integer, p_limit integer default 10000
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  n bigint;
begin
  perform reactor.check_range('p_older_than_seconds', p_older_than_seconds, 0, 2147483647);
  perform reactor.check_range('p_limit', p_limit, 1, 100000);
  execute format($q$
    with old as (
      select j.id from public.%1$I j
      where j.status in ('completed', 'failed', 'cancelled')
        and j.completed_at < now() - make_interval(secs => $1)
      order by j.completed_at limit $2 for update skip locked
    ) delete from public.%1$I j using old where j.id = old.id
  $q$, t) using p_older_than_seconds, p_limit;
  get diagnostics n = row_count;
  return jsonb_build_object('pruned', n);
end
$$;

-- A signed-in user cancels one of their own pending or running jobs, as reactor_cancel does.
-- Returns {"id", "cancelled", "status"};
-- a job that is not theirs is reported exactly as one that does not exist.
create or replace function public.reactor_cancel_own(p_table text, p_id bigint) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  owner uuid := auth.uid();
  state text;
begin
  if owner is null then
    raise exception 'only a signed-in user can cancel their jobs' using errcode = '42501';
  end if;
  execute format($q$
    with was as (
      select j.id, j.status, j.locked_by from public.%1$I j
      where j.id = $1 and user_id = $2 and j.status in ('pending', 'processing', 'waiting')
      for update
    ), hit as (
      update public.%1$I j
      set status = 'cancelled', completed_at = now(), updated_at = now(),
          lease_token = null, lease_expires_at = null
      from was where j.id = was.id
      returning j.status, was.status as was_status, was.locked_by
    ), signals as (
      insert into public.%1$I (job_type, status, payload, locked_by)
      select reactor.probe_job_type(), 'cancelled',
             jsonb_build_object('worker', h.locked_by, 'cancel', $1), h.locked_by
      from hit h where h.was_status = 'processing' and h.locked_by is not null
    )
    select status from hit
  $q$, t) using p_id, owner into state;
  if state is null then
    execute format('select status from public.%I where id = $1 and user_id = $2', t)
      using p_id, owner into state;
  end if;
  if state is null then
    raise exception 'job % not found in %', p_id, t using errcode = 'PT404';
  end if;
  return jsonb_build_object('id', p_id, 'cancelled', state = 'cancelled', 'status', state);
end
$$;


-- Set p_job_type's limits in p_table: the keys of p_limits that are given (concurrency, rate,
-- per_seconds, per_user, paused; null clears a limit), the others kept. Returns the row as stored,
-- or {} when no limit is left and the type is not paused (the row is then deleted).
create or replace function public.reactor_set_limits(p_table text, p_job_type text, p_limits jsonb)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  lim reactor.job_limits;
  key text;
begin
  perform reactor.check_job_types(array[p_job_type]);
  if jsonb_typeof(p_limits) is distinct from 'object' then
    raise exception 'p_limits must be a JSON object';
  end if;
  for key in select jsonb_object_keys(p_limits) loop
    if key not in ('concurrency', 'rate', 'per_seconds', 'per_user', 'paused') then
      raise exception 'p_limits: unknown limit %; give concurrency, rate, per_seconds, per_user or paused', key;
    end if;
  end loop;
  insert into reactor.job_limits (job_table, job_type) values (t, p_job_type) on conflict do nothing;
  begin
    update reactor.job_limits l set
      concurrency = case when p_limits ? 'concurrency' then (p_limits ->> 'concurrency')::integer else l.concurrency end,
      rate = case when p_limits ? 'rate' then (p_limits ->> 'rate')::integer else l.rate end,
      per_seconds = case when p_limits ? 'per_seconds' then (p_limits ->> 'per_seconds')::integer else l.per_seconds end,
      per_user = case when p_limits ? 'per_user' then (p_limits ->> 'per_user')::integer else l.per_user end,
      paused = case when p_limits ? 'paused' then coalesce((p_limits ->> 'paused')::boolean, false) else l.paused end
    where l.job_table = t and l.job_type = p_job_type
    returning * into lim;
  exception when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception 'p_limits: %', sqlerrm
      using hint = 'concurrency 0 or more, rate 1 to 10000 with per_seconds 1 to 86400, per_user 1 or more, paused true or false';
  end;
  if lim.concurrency is null and lim.rate is null and lim.per_user is null and not lim.paused then
    delete from reactor.job_limits l where l.job_table = t and l.job_type = p_job_type;
    return '{}';
  end if;
  return jsonb_strip_nulls(jsonb_build_object(
    'concurrency', lim.concurrency, 'rate', lim.rate, 'per_seconds', lim.per_seconds,
    'per_user', lim.per_user, 'paused', lim.paused));
end
$$;

-- The limits a worker's handlers declare, {"type": {limits as reactor_set_limits takes}}, set for
-- each type that has no row yet: a declaration never overrides what an operator set. Returns
-- every limited type of p_table with its limits as stored (reactor_limits).
create or replace function public.reactor_declare_limits(p_table text, p_limits jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  item record;
begin
  if jsonb_typeof(p_limits) is distinct from 'object' then
    raise exception 'p_limits must be a JSON object of job types';
  end if;
  for item in select key, value from jsonb_each(p_limits) loop
    if not exists (select 1 from reactor.job_limits l where l.job_table = t and l.job_type = item.key) then
      perform public.reactor_set_limits(t, item.key, item.value);
    end if;
  end loop;
  return public.reactor_limits(t);
end
$$;

-- Every limited or paused type of p_table: {"type": {limits}}.
create or replace function public.reactor_limits(p_table text) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_object_agg(l.job_type, jsonb_strip_nulls(jsonb_build_object(
           'concurrency', l.concurrency, 'rate', l.rate, 'per_seconds', l.per_seconds,
           'per_user', l.per_user, 'paused', l.paused))), '{}')
  from reactor.job_limits l where l.job_table = reactor.job_table(p_table)
$$;


-- ==== 9b. Schedules ====
--
-- A schedule enqueues one job into a job table at each time of a cron expression, read in an IANA
-- time zone. Workers declare their schedules (`@app.cron`) with reactor_fire_schedules, or an
-- operator declares one in SQL with reactor.schedule(); either way this table is the truth, and
-- the last declaration wins.
--
-- The worker engine: workers compute a schedule's times (Python, with the cron library and the
-- zone's rules, DST included) and send the due ones with reactor_fire_schedules. The SQL holds
-- once-only on its own, however many workers send the same time: under the schedule's row lock, a
-- time is enqueued only when it is later than `fired_through`, which then moves up to it, so a
-- time is enqueued at most once, in increasing order. A time is enqueued only when it is due by the
-- database's clock and at most `catch_up_seconds` old: times missed while no worker ran are
-- enqueued once each when a worker comes back within that window, and older ones are skipped
-- (`fired_through` moves past them). A new or redefined schedule starts from the time of its
-- declaration; it never enqueues times before it.
--
-- The pg_cron engine (Supabase Cron), where the project has pg_cron: reactor.schedule(...,
-- p_engine => 'pg_cron') registers a cron job that calls reactor.fire_schedule(name) in the
-- database every time, with no worker alive. pg_cron reads its expressions in its own time zone
-- (cron.timezone, GMT on Supabase) and to the minute, so such a schedule is UTC with five fields,
-- and it fires only while the database runs; the same row lock and `fired_through` keep it once
-- only. reactor.schedule_maintenance() runs reaping and pruning there too.

create table if not exists reactor.schedules (
  name text primary key,
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  cron text not null,
  time_zone text not null,
  payload jsonb not null default '{}'::jsonb,
  priority integer not null default 0,
  max_attempts integer not null default 5 check (max_attempts between 1 and 1000),
  catch_up_seconds integer not null check (catch_up_seconds between 1 and 31622400),
  engine text not null default 'worker' check (engine in ('worker', 'pg_cron')),
  fired_through timestamptz not null default now(),  -- every time up to here is enqueued or skipped
  last_run_at timestamptz,  -- the latest scheduled time enqueued
  last_job_id bigint,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
revoke all on reactor.schedules from public;

-- A schedule as the worker and `reactor stats` read it.
create or replace function reactor.schedule_json(s reactor.schedules) returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object(
    'name', s.name, 'table', s.job_table, 'job_type', s.job_type, 'cron', s.cron,
    'time_zone', s.time_zone, 'catch_up_seconds', s.catch_up_seconds, 'engine', s.engine,
    'fired_through', s.fired_through, 'last_run_at', s.last_run_at, 'last_job_id', s.last_job_id)
$$;

-- Declare (or redefine) a schedule: every time of p_cron in p_time_zone, a job of p_job_type with
-- p_payload in p_table. A schedule whose cron, zone or engine changes starts afresh from now;
-- the same declaration again changes nothing. p_cron has five fields, or six with seconds first;
-- the workers' cron library reads it (a worker logs an expression it cannot read and leaves that
-- schedule alone). With p_engine 'pg_cron' the schedule is a pg_cron job instead (see above).
-- Returns the schedule as reactor.schedule_json() shows it.
create or replace function reactor.schedule(
  p_name text, p_cron text, p_table text default 'jobs', p_job_type text default null,
  p_payload jsonb default '{}', p_time_zone text default 'UTC', p_catch_up_seconds integer default 3600,
  p_priority integer default 0, p_max_attempts integer default 5, p_engine text default 'worker'
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  job_type text := coalesce(p_job_type, p_name);
  old reactor.schedules;
  s reactor.schedules;
  fresh boolean;
begin
  if p_name is null or p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$' then
    raise exception 'invalid schedule name "%"', left(coalesce(p_name, '<null>'), 100)
      using hint = 'Use 1 to 100 letters, digits, and _ . : -, starting with a letter or digit.';
  end if;
  if p_cron is null or length(p_cron) > 200
     or p_cron !~ '^\s*[0-9A-Za-z*,/#?-]+(\s+[0-9A-Za-z*,/#?-]+){4,5}\s*$' then
    raise exception 'schedule %: cron "%" is not five fields (or six, seconds first)', p_name, left(coalesce(p_cron, '<null>'), 200);
  end if;
  if job_type = '' or length(job_type) > 200 or job_type like 'reactor.%' then
    raise exception 'schedule %: job type must be 1 to 200 characters and not start with "reactor."', p_name;
  end if;
  if p_engine is null or p_engine not in ('worker', 'pg_cron') then
    raise exception 'schedule %: engine must be worker or pg_cron', p_name;
  end if;
  perform reactor.check_range('p_catch_up_seconds', p_catch_up_seconds, 1, 31622400);
  perform reactor.check_range('p_priority', p_priority, -2147483648, 2147483647);
  perform reactor.check_range('p_max_attempts', p_max_attempts, 1, 1000);
  if p_payload is null or reactor.payload_problem(p_payload) is not null then
    raise exception 'schedule %: %', p_name, coalesce(reactor.payload_problem(p_payload), 'payload is missing');
  end if;

  select * into old from reactor.schedules where name = p_name for update;
  fresh := coalesce(old.name is null or old.cron <> btrim(p_cron) or old.time_zone <> p_time_zone
                    or old.engine <> p_engine, true);
  if fresh and not exists (select 1 from pg_timezone_names where name = p_time_zone) then
    raise exception 'schedule %: unknown time zone "%"', p_name, left(coalesce(p_time_zone, '<null>'), 100)
      using hint = 'Name an IANA time zone, such as UTC or Europe/Berlin.';
  end if;
  if p_engine = 'pg_cron' then
    if to_regnamespace('cron') is null then
      raise exception 'schedule %: the pg_cron engine needs the pg_cron extension', p_name
        using hint = 'Enable it (Supabase: Integrations, Cron), or leave the schedule to the workers.';
    end if;
    if p_time_zone not in ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT') or btrim(p_cron) ~ '^\S+(\s+\S+){5}$' then
      raise exception 'schedule %: pg_cron reads five-field expressions in UTC', p_name
        using hint = 'Give the UTC time zone and five fields, or leave the schedule to the workers.';
    end if;
  end if;

  insert into reactor.schedules as r (name, job_table, job_type, cron, time_zone, payload, priority,
                                      max_attempts, catch_up_seconds, engine)
  values (p_name, t, job_type, btrim(p_cron), p_time_zone, p_payload, p_priority, p_max_attempts,
          p_catch_up_seconds, p_engine)
  on conflict (name) do update set
    job_table = excluded.job_table, job_type = excluded.job_type, cron = excluded.cron,
    time_zone = excluded.time_zone, payload = excluded.payload, priority = excluded.priority,
    max_attempts = excluded.max_attempts, catch_up_seconds = excluded.catch_up_seconds,
    engine = excluded.engine,
    fired_through = case when fresh then greatest(r.fired_through, now()) else r.fired_through end,
    updated_at = now()
  where (r.job_table, r.job_type, r.cron, r.time_zone, r.payload, r.priority, r.max_attempts,
         r.catch_up_seconds, r.engine)
        is distinct from (excluded.job_table, excluded.job_type, excluded.cron, excluded.time_zone,
                          excluded.payload, excluded.priority, excluded.max_attempts,
                          excluded.catch_up_seconds, excluded.engine);

  if p_engine = 'pg_cron' and fresh then
    execute 'select cron.schedule($1, $2, $3)'
      using 'reactor:' || p_name, btrim(p_cron), format('select reactor.fire_schedule(%L)', p_name);
  elsif p_engine = 'worker' and old.engine = 'pg_cron' then
    execute 'select cron.unschedule($1)' using 'reactor:' || p_name;
  end if;
  select * into s from reactor.schedules where name = p_name;
  return reactor.schedule_json(s);
end
$$;

-- Delete a schedule (and its pg_cron job); true when there was one. Jobs it enqueued stay.
create or replace function reactor.unschedule(p_name text) returns boolean
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  engine text;
begin
  delete from reactor.schedules s where s.name = p_name returning s.engine into engine;
  if engine = 'pg_cron' then
    execute 'select cron.unschedule($1)' using 'reactor:' || p_name;
  end if;
  return engine is not null;
end
$$;

-- Enqueue schedule p_name's jobs for p_times, once only (see above): the times later than
-- fired_through, due by now() and at most catch_up_seconds old, oldest first. The caller names the
-- definition it computed the times from (cron, zone, engine); when it is not the current one,
-- nothing is enqueued and the answer says `current: false`. Returns {"name", "current",
-- "enqueued": [{"at", "id"}], "skipped": {"from", "to"} or null}: `skipped` is the span of times
-- this call gave up as older than the catch-up window.
create or replace function reactor.fire_times(
  p_name text, p_cron text, p_time_zone text, p_engine text, p_times timestamptz[]
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  s reactor.schedules;
  window_start timestamptz;
  through timestamptz;
  skipped jsonb;
  due timestamptz;
  job bigint;
  enqueued jsonb := '[]';
begin
  select * into s from reactor.schedules where name = p_name for update;
  if s.name is null or s.cron <> p_cron or s.time_zone <> p_time_zone or s.engine <> p_engine then
    return jsonb_build_object('name', p_name, 'current', false, 'enqueued', enqueued, 'skipped', null);
  end if;
  window_start := now() - make_interval(secs => s.catch_up_seconds);
  through := s.fired_through;
  if through < window_start then
    skipped := jsonb_build_object('from', through, 'to', window_start);
    through := window_start;
  end if;
  for due in
    select distinct x from unnest(p_times) x where x > through and x <= now() order by x
  loop
    execute format($q$
      insert into public.%I (job_type, payload, priority, max_attempts, run_at)
      values ($1, $2, $3, $4, $5) returning id
    $q$, s.job_table) using s.job_type, s.payload, s.priority, s.max_attempts, due into job;
    enqueued := enqueued || jsonb_build_object('at', due, 'id', job);
    through := due;
  end loop;
  if through > s.fired_through then
    update reactor.schedules r
    set fired_through = through,
        last_run_at = case when job is null then r.last_run_at else through end,
        last_job_id = coalesce(job, r.last_job_id)
    where r.name = p_name;
  end if;
  return jsonb_build_object('name', p_name, 'current', true, 'enqueued', enqueued, 'skipped', skipped);
end
$$;

-- What pg_cron runs for a schedule with the pg_cron engine: enqueue the job for this minute, the
-- time pg_cron started it for. Returns the new job's id, or null when that minute was enqueued
-- already.
create or replace function reactor.fire_schedule(p_name text) returns bigint
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  s reactor.schedules;
begin
  select * into s from reactor.schedules where name = p_name;
  if s.name is null then
    raise exception 'no schedule named "%"', left(coalesce(p_name, '<null>'), 100);
  end if;
  return (reactor.fire_times(s.name, s.cron, s.time_zone, 'pg_cron', array[date_trunc('minute', now())])
          -> 'enqueued' -> 0 ->> 'id')::bigint;
end
$$;

-- Let pg_cron reap p_table's expired leases every minute and prune its jobs finished more than
-- p_prune_after ago every night at 03:17 UTC, so neither waits for a worker. Run it again to
-- change the prune age; p_prune_after null stops the pruning.
create or replace function reactor.schedule_maintenance(
  p_table text default 'jobs', p_prune_after interval default '7 days'
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  if to_regnamespace('cron') is null then
    raise exception 'reactor.schedule_maintenance needs the pg_cron extension'
      using hint = 'Enable it (Supabase: Integrations, Cron).';
  end if;
  execute 'select cron.schedule($1, $2, $3)'
    using 'reactor:reap:' || t, '* * * * *', format('select public.reactor_reap(%L)', t);
  if p_prune_after is null then
    execute 'select cron.unschedule(jobid) from cron.job where jobname = $1' using 'reactor:prune:' || t;
  else
    perform reactor.check_range('p_prune_after in seconds', extract(epoch from p_prune_after)::bigint, 0, 2147483647);
    execute 'select cron.schedule($1, $2, $3)'
      using 'reactor:prune:' || t, '17 3 * * *',
            format('select public.reactor_prune(%L, %s, 100000)', t, extract(epoch from p_prune_after)::bigint);
  end if;
end
$$;

-- The worker's one call for schedules:
--   1. declare p_declare's schedules (items {name, table, job_type, cron, time_zone, payload,
--      priority, max_attempts, catch_up_seconds}, as reactor.schedule(); a schedule the pg_cron
--      engine runs stays with it);
--   2. fire p_fire's times (items {name, cron, time_zone, times: [timestamps]}, as
--      reactor.fire_times() with the worker engine), in name order, at most reactor.max_batch()
--      times in all;
--   3. list the schedules of the job types p_tables names ({"table": ["job type", ...]}).
-- Returns {"now": the database's clock, "fired": [as reactor.fire_times()],
--          "schedules": [as reactor.schedule_json()]}.
create or replace function public.reactor_fire_schedules(
  p_worker text, p_tables jsonb, p_declare jsonb default '[]', p_fire jsonb default '[]'
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  item jsonb;
  fired jsonb := '[]';
begin
  perform reactor.check_worker(p_worker);
  if p_tables is null or jsonb_typeof(p_tables) <> 'object' then
    raise exception 'p_tables must be a JSON object of job table names and their job types';
  end if;
  if exists (select 1 from jsonb_each(p_tables) e
             where jsonb_typeof(e.value) <> 'array'
                or exists (select 1 from jsonb_array_elements(e.value) x where jsonb_typeof(x) <> 'string')) then
    raise exception 'p_tables must map each job table to an array of job types';
  end if;
  if coalesce(jsonb_typeof(p_declare), '') <> 'array' or coalesce(jsonb_typeof(p_fire), '') <> 'array' then
    raise exception 'p_declare and p_fire must be JSON arrays';
  end if;
  perform reactor.check_range('schedules declared', jsonb_array_length(p_declare), 0, reactor.max_batch());
  perform reactor.check_range('times to fire',
    (select coalesce(sum(jsonb_array_length(case when jsonb_typeof(x -> 'times') = 'array' then x -> 'times' else '[]' end)), 0)
     from jsonb_array_elements(p_fire) x)::bigint, 0, reactor.max_batch());
  perform set_config('lock_timeout', '2s', true);  -- another worker's firing of the same schedule
  for item in select x from jsonb_array_elements(p_declare) x order by x ->> 'name' loop
    if jsonb_typeof(item) <> 'object' then
      raise exception 'each schedule declared must be a JSON object';
    end if;
    perform reactor.schedule(
      item ->> 'name', item ->> 'cron', coalesce(item ->> 'table', 'jobs'), item ->> 'job_type',
      coalesce(item -> 'payload', '{}'), coalesce(item ->> 'time_zone', 'UTC'),
      coalesce((item ->> 'catch_up_seconds')::integer, 3600), coalesce((item ->> 'priority')::integer, 0),
      coalesce((item ->> 'max_attempts')::integer, 5),
      coalesce((select s.engine from reactor.schedules s where s.name = item ->> 'name'), 'worker'));
  end loop;
  for item in
    select x from jsonb_array_elements(p_fire) x order by x ->> 'name'
  loop
    if jsonb_typeof(item) <> 'object' or jsonb_typeof(item -> 'times') <> 'array' then
      raise exception 'each item to fire must be a JSON object with a times array';
    end if;
    fired := fired || reactor.fire_times(
      item ->> 'name', item ->> 'cron', item ->> 'time_zone', 'worker',
      array(select t::timestamptz from jsonb_array_elements_text(item -> 'times') t));
  end loop;
  return jsonb_build_object(
    'now', now(),
    'fired', fired,
    'schedules', (select coalesce(jsonb_agg(reactor.schedule_json(s) order by s.name), '[]')
                  from reactor.schedules s
                  where s.job_type in (select jsonb_array_elements_text(p_tables -> s.job_table))));
end
$$;

-- Every schedule, or p_table's, for `reactor stats`: {"now", "schedules": [...]}.
create or replace function public.reactor_schedules(p_table text default null) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object(
    'now', now(),
    'schedules', (select coalesce(jsonb_agg(reactor.schedule_json(s) order by s.job_table, s.name), '[]')
                  from reactor.schedules s where p_table is null or s.job_table = p_table))
$$;


-- ==== 9c. Webhooks on outcomes ====
--
-- Where the project has pg_net, reactor.add_webhook() makes every job of a table (or of one type)
-- that finishes, completed, failed for good or cancelled, queue an HTTP POST of its outcome in the
-- same transaction as the outcome: a rolled-back outcome posts nothing, and no worker has to be
-- alive. pg_net sends it after the commit, once, with no retry; its answer is in
-- net._http_response for a few hours. A table with no webhook has no trigger and pays nothing.

create table if not exists reactor.webhooks (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_.:-]{0,99}$'),
  job_table text not null references reactor.job_tables (name),
  job_type text,  -- null: every type
  url text not null check (url ~ '^https?://'),
  headers jsonb not null default '{}' check (jsonb_typeof(headers) = 'object'),
  timeout_ms integer not null default 5000 check (timeout_ms between 100 and 60000),
  created_at timestamptz not null default now()
);
revoke all on reactor.webhooks from public;

-- Queue one POST per webhook of the job's table and type, with the job's outcome as its body:
-- {table, id, job_type, status, attempts, result, last_error, user_id, completed_at}.
create or replace function reactor.post_outcome() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  hook reactor.webhooks;
begin
  for hook in
    select * from reactor.webhooks w
    where w.job_table = tg_table_name and (w.job_type is null or w.job_type = new.job_type)
    order by w.name
  loop
    perform net.http_post(
      url => hook.url,
      body => jsonb_build_object(
        'table', tg_table_name, 'id', new.id, 'job_type', new.job_type, 'status', new.status,
        'attempts', new.attempts, 'result', new.result, 'last_error', new.last_error,
        'user_id', new.user_id, 'completed_at', new.completed_at),
      headers => hook.headers || '{"Content-Type": "application/json"}',
      timeout_milliseconds => hook.timeout_ms);
  end loop;
  return null;
end
$$;

-- Post the outcome of every job of p_table (of p_job_type, when given) that finishes to p_url,
-- with p_headers (for example an Authorization header; stored where only the service role and
-- the SQL editor read it). Run it again to change a webhook. Returns the webhook's row.
create or replace function reactor.add_webhook(
  p_name text, p_table text, p_url text, p_job_type text default null,
  p_headers jsonb default '{}', p_timeout_ms integer default 5000
) returns reactor.webhooks
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  hook reactor.webhooks;
begin
  if to_regproc('net.http_post') is null then
    raise exception 'webhook %: reactor.add_webhook needs the pg_net extension', p_name
      using hint = 'Enable it (Supabase: Database, Extensions, pg_net).';
  end if;
  insert into reactor.webhooks (name, job_table, job_type, url, headers, timeout_ms)
  values (p_name, t, p_job_type, p_url, coalesce(p_headers, '{}'), p_timeout_ms)
  on conflict (name) do update set job_table = excluded.job_table, job_type = excluded.job_type,
    url = excluded.url, headers = excluded.headers, timeout_ms = excluded.timeout_ms
  returning * into hook;
  execute format($q$
    create or replace trigger reactor_post_outcome after update of status on public.%I for each row
    when (new.status in ('completed', 'failed', 'cancelled') and old.status in ('pending', 'processing', 'waiting'))
    execute function reactor.post_outcome()$q$, t);
  return hook;
end
$$;

-- Delete a webhook; a table left with none loses its trigger. Returns whether it existed.
create or replace function reactor.remove_webhook(p_name text) returns boolean
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text;
begin
  delete from reactor.webhooks where name = p_name returning job_table into t;
  if t is null then
    return false;
  end if;
  if not exists (select 1 from reactor.webhooks where job_table = t) then
    execute format('drop trigger if exists reactor_post_outcome on public.%I', t);
  end if;
  return true;
end
$$;


-- ==== 10. Grants ====
--
-- Only the service role runs the entry points; Supabase's default privileges would otherwise hand
-- them to anon and authenticated. Signed-in users may cancel their own jobs. No API role runs
-- anything in schema `reactor`.

do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.proname like 'reactor\_%'
  loop
    execute format('revoke all on function %s from public, anon, authenticated', fn);
    execute format('grant execute on function %s to service_role', fn);
  end loop;
end
$$;
grant execute on function public.reactor_cancel_own(text, bigint) to authenticated;
revoke all on all functions in schema reactor from public;


-- ==== 11. The first job table, and the ledger ====

select reactor.create_job_table('jobs');

-- This file holds every migration up to the last one listed here: record them all, so that
-- `reactor migrate` applies only later ones.
insert into reactor.schema_migrations (version) values
  ('0001_reactor_schema'),
  ('0002_job_tables'),
  ('0003_worker_functions'),
  ('0004_tick'),
  ('0005_hot_path'),
  ('0006_claim_plans'),
  ('0007_hand_off'),
  ('0008_hostile_rows'),
  ('0009_claim_batch'),
  ('0010_one_message_per_job'),
  ('0011_schedules'),
  ('0012_flow_control'),
  ('0013_cancel_and_snooze'),
  ('0014_unique_jobs'),
  ('0015_child_jobs'),
  ('0016_job_logs'),
  ('0017_finish_webhooks'),
  ('0018_limits_in_statistics'),
  ('0019_unique_window'),
  ('0020_overview'),
  ('0021_heartbeat_knows_cancels'),
  ('0022_announce_by_broadcast'),
  ('0023_owner_share'),
  ('0024_claim_as_json'),
  ('0025_standby_counts'),
  ('0026_set_limits_locks_once')
on conflict do nothing;
