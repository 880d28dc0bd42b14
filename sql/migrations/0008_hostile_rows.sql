-- reactor 0008: every inserted row is hostile.
--
-- Frontends insert job rows as signed-in users, and with anonymous sign-ins every visitor is
-- signed in. No value one user can insert may crash a worker, stop a chore, stall other users'
-- jobs, buy priority or read what is not theirs (docs/reliability.md, "Hostile rows"). So:
--
-- 1. Bounds every row obeys, whoever inserts it: `run_at` finite, from 2000 to 2200 (a check
--    constraint; every function that computes with it is then safe), and a payload of at most
--    1 MiB nested at most 32 deep (checked by the insert trigger, so updates never re-read it).
--    Rows already outside them are brought inside: a run_at is clamped, an active job with such a
--    payload fails with the reason, its payload kept.
-- 2. An insert policy for `authenticated`, stated once per job type with reactor.allow_insert():
--    the types a user may insert (none until listed), the highest priority a user may ask for, the
--    most attempts a job gets, how far ahead a job may be scheduled, the payload size, and per user the jobs
--    waiting and the inserts a minute. A run_at in the past is moved to now, so it
--    cannot jump the queue. It checks the row as it will be stored, after the table's own BEFORE
--    triggers (which may derive a priority from the project's data) and before the hand-off.
--    `service_role`, operators and the project's own SECURITY DEFINER functions are not bound.
-- 3. Owners see only the columns meant for them (not the lease token, the worker or the lease's
--    end) and cancel their own pending jobs with reactor_cancel_own().
-- 4. The claim index leads with job_type, so rows of types a worker does not handle cost its
--    claims nothing; expired standby rows are deleted; the sequences get the tables' revokes.

-- The columns of a job table its owner may read.
create or replace function reactor.owner_columns() returns text
language sql immutable as $$
  select 'id, job_type, payload, priority, run_at, max_attempts, user_id, status, attempts, result, '
         'last_error, progress, progress_message, created_at, started_at, completed_at, updated_at'
$$;

create or replace function reactor.max_payload_bytes() returns integer
language sql immutable as 'select 1048576';

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

-- What one job type's inserts by `authenticated` may be. No row: such inserts are refused.
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

-- The insert policy, for rows `authenticated` inserts (the trigger's WHEN clause). Errors carry
-- PostgREST's status: 403 for a type not allowed, 429 for a user over a per-user limit, 413 for
-- a payload too large, 400 for a value out of bounds. A run_at in the past becomes now and a
-- max_attempts above the rule becomes the rule's: asking for them harms nobody.
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

-- 0007's hand-off, which fires last on every insert, now first refuses a payload out of bounds.
create or replace function reactor.hand_off() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  taker text;
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
  end if;
  if new.status <> 'pending' or new.run_at > now() then
    return new;
  end if;
  select s.worker into taker from reactor.standby s
  where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
    and new.job_type = any(s.job_types)
  order by s.slots desc
  limit 1
  for update skip locked;
  if taker is null then
    return new;
  end if;
  update reactor.standby s set slots = s.slots - 1 where s.job_table = tg_table_name and s.worker = taker;
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

-- Claim up to p_limit due jobs, as 0006's template, but one ordered index scan per job type
-- (the claim index leads with job_type), merged: rows of types this worker does not handle,
-- however many and at whatever priority, are never read.
create or replace function reactor.create_claim_function(p_name text) returns void
language plpgsql as $$
begin
  execute format($ddl$
    create or replace function reactor.%1$I(
      p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer
    ) returns table (
      id bigint, job_type text, payload jsonb, priority integer, attempt integer,
      max_attempts integer, lease_token uuid, lease_expires_at timestamptz, run_at timestamptz,
      created_at timestamptz, started_at timestamptz, user_id uuid
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
               c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id
        from claimed c order by c.priority desc, c.run_at, c.id;
    end
    $body$
  $ddl$, 'claim_' || p_name, p_name);
  execute format('revoke all on function reactor.%I(text, text[], integer, integer) from public',
    'claim_' || p_name);
end
$$;

-- Everything above, for one job table. Idempotent and cheap once done: reactor.create_job_table()
-- runs it on every call, and this migration for every table there is.
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
  execute format('grant select (%s) on public.%I to authenticated', reactor.owner_columns(), p_name);
  execute format('revoke all on sequence %s from public, anon, authenticated',
    pg_get_serial_sequence(format('public.%I', p_name), 'id'));

  execute format(
    'create or replace trigger zy_reactor_insert_policy before insert on public.%I for each row '
    'when (current_user = ''authenticated'') execute function reactor.insert_policy()', p_name);
end
$$;

-- 0002's create_job_table, and then the guard above; calling it again on a table changes nothing.
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

revoke all on function reactor.create_job_table(text) from public;

select reactor.create_claim_function(name) from reactor.job_tables;
select reactor.guard_job_table(name) from reactor.job_tables;

-- 0007's standby offer; a tick (p_refill false) also deletes the table's standby rows that expired
-- more than a minute ago, which every hand-off would otherwise read past.
create or replace function reactor.stand_by(
  p_table text, p_worker text, p_job_types text[], p_slots integer, p_seconds integer, p_refill boolean
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
begin
  if not p_refill then
    delete from reactor.standby s where s.ctid = any(array(
      select e.ctid from reactor.standby e
      where e.job_table = p_table and e.expires_at < now() - interval '1 minute'
      for update skip locked));
  end if;
  perform 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker for update skip locked;
  if found then
    if p_seconds > 0 then
      update reactor.standby s
      set job_types = p_job_types, expires_at = now() + make_interval(secs => p_seconds),
          slots = case when p_refill then p_slots else least(s.slots, p_slots) end
      where s.job_table = p_table and s.worker = p_worker;
    else
      delete from reactor.standby s where s.job_table = p_table and s.worker = p_worker;
    end if;
  elsif p_seconds > 0 and p_refill
        and not exists (select 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker) then
    insert into reactor.standby (job_table, worker, job_types, slots, expires_at)
    values (p_table, p_worker, p_job_types, p_slots, now() + make_interval(secs => p_seconds))
    on conflict do nothing;
  end if;
end
$$;

-- 0003's fail; a retry_at is kept inside the bounds every row's run_at obeys.
create or replace function public.reactor_fail(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  retried bigint[];
  dead bigint[];
begin
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
                            'stale', reactor.stale_ids(p_jobs, retried || dead));
end
$$;

-- A signed-in user cancels one of their own pending jobs. Returns {"id", "cancelled", "status"};
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
    update public.%I set status = 'cancelled', completed_at = now(), updated_at = now()
    where id = $1 and user_id = $2 and status = 'pending' returning status
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

insert into reactor.schema_migrations (version) values ('0008_hostile_rows') on conflict do nothing;
