-- reactor 0015: child jobs and fan-in. A running job spawns children (reactor_spawn), ordinary
-- jobs of its table that act for the same owner, and may then wait for them (reactor_wait): it
-- leaves `processing` for `waiting`, and when its last child has finished (completed, failed for
-- good or cancelled) it goes back to `pending` with `resumed` one higher, to run again and read
-- its children's outcomes (reactor_children). Spawning is idempotent per key, so a parent that
-- runs again after a crash finds the children it already made. Cancelling a job cancels its
-- unfinished children too. Jobs that are not children pay one trigger condition per finish.

create or replace function reactor.max_children() returns integer
language sql immutable as 'select 1000';

-- Owners read which job spawned theirs, and how often it was resumed.
create or replace function reactor.owner_columns() returns text
language sql immutable as $$
  select 'id, job_type, payload, priority, run_at, max_attempts, user_id, status, attempts, result, '
         'last_error, progress, progress_message, created_at, started_at, completed_at, updated_at, unique_key, '
         'parent_id, resumed'
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

-- Every call of create_job_table() guards the table, and now gives it child jobs too.
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
  execute format('grant select (%s) on public.%I to authenticated', reactor.owner_columns(), p_name);
  execute format('revoke all on sequence %s from public, anon, authenticated',
    pg_get_serial_sequence(format('public.%I', p_name), 'id'));

  execute format(
    'create or replace trigger zy_reactor_insert_policy before insert on public.%I for each row '
    'when (current_user = ''authenticated'') execute function reactor.insert_policy()', p_name);
end
$$;

select reactor.guard_job_table(name) from reactor.job_tables;

-- A claimed row now says whether the job was resumed and which job spawned it. A function's
-- result type cannot be replaced, and the earlier migrations, pasted again, would make the earlier
-- claim functions again: so the claim moves to functions of new names (reactor.claim_due_<table>,
-- reactor.claim_within_limits, reactor.claim), and the earlier ones are dropped, except
-- public.reactor_claim, which keeps its rows and reads them from reactor.claim.
drop function if exists reactor.claim_limited(text, text, text, integer, integer);
do $$
declare
  t text;
begin
  for t in select name from reactor.job_tables loop
    execute format('drop function if exists reactor.%I(text, text[], integer, integer)', 'claim_' || t);
  end loop;
end
$$;

-- Make reactor.claim_due_<table>, the claim query of one job table. Its query is static SQL, which
-- plpgsql plans once per database session and then reuses; a query built with format() would be
-- planned on every call (docs/benchmarks.md).
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

select reactor.create_claim_function(name) from reactor.job_tables;

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

-- The claim: the limited types first, each within its limits (claim_within_limits), then the others.
create or replace function reactor.claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
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
                             p_standby_seconds, true);
  end if;
end
$$;

-- The claim as rows (reactor_claim_batch is the worker's): the rows of reactor.claim without
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

-- The tick's claimed rows are reactor.claim's.
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

-- Finish running jobs with their results. Returns {"completed": [ids], "stale": [ids]},
-- with "resumed": n when this call finished the last child of n waiting parents (job_finished).
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
      'realtime', reactor.realtime_state()
    )
  $q$, t) using t into stats;
  return stats;
end
$$;

-- Cancelling reaches waiting jobs too, and through job_finished their unfinished children.
-- Cancel pending, running and waiting jobs; finished ones are left alone and listed as not cancelled. A
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

-- A signed-in user cancels one of their own pending, running or waiting jobs, as reactor_cancel does.
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

do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.proname in ('reactor_spawn', 'reactor_wait', 'reactor_children')
  loop
    execute format('revoke all on function %s from public, anon, authenticated', fn);
    execute format('grant execute on function %s to service_role', fn);
  end loop;
end
$$;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0015_child_jobs') on conflict do nothing;
