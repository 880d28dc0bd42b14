-- reactor 0007: a job inserted while a worker stands by is handed to it by the insert itself.
--
-- Until now every job went insert -> Realtime event -> claim request -> handler, and the claim,
-- an HTTP round trip to the database and back, was most of the time from insert to handler
-- (docs/benchmarks.md). A worker with free slots and a live Realtime subscription now says so
-- with every claim: a row in reactor.standby with its job types and free slots. An insert that
-- is due at once and finds such a row takes one of its slots in the same statement: the row is
-- written already `processing`, locked by that worker, with a lease token, and the insert's
-- Realtime event is all the worker needs to start the handler. No claim request is made.
--
-- Realtime is still a hint. A hand-off lease is short (5 s) and `started_at` stays null until
-- the worker confirms it with a heartbeat, which it sends at once. A hand-off nobody confirmed
-- (the event was lost, the worker died or lost its socket) is reaped like any expired lease, but
-- goes back to `pending` at once and gives its attempt back: the handler may never have run.
-- Every worker that hears a hand-off to another worker ticks (reaps and claims) when that
-- hand-off's lease ends, unless it was confirmed, so a lost hand-off waits seconds, not a sweep.
--
-- Standby rows are only ever locked with SKIP LOCKED or briefly: an insert holds the row it
-- took a slot from until its transaction commits, and a claim that finds its row locked leaves
-- it as it is rather than wait for someone else's transaction.

create table if not exists reactor.standby (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  worker text not null,
  job_types text[] not null,
  slots integer not null check (slots >= 0),
  expires_at timestamptz not null,
  primary key (job_table, worker)
);
revoke all on reactor.standby from public;

-- At most this many jobs wait on one worker's hand-off lease when that worker dies unheard; a
-- burst beyond it takes the claim path, which offers the slots again.
create or replace function reactor.max_standby_slots() returns integer
language sql immutable as 'select 16';

create or replace function reactor.hand_off() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  taker text;
begin
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

-- BEFORE triggers fire in name order; this one is named to come after the table's own, which may
-- set the row's run_at or job_type.
create or replace function reactor.create_hand_off_trigger(p_name text) returns void
language plpgsql as $$
begin
  execute format(
    'create or replace trigger zz_reactor_hand_off before insert on public.%I for each row execute function reactor.hand_off()',
    p_name);
end
$$;

create or replace function reactor.job_table_registered() returns trigger
language plpgsql as $$
begin
  perform reactor.create_claim_function(new.name);
  perform reactor.create_hand_off_trigger(new.name);
  return null;
end
$$;

select reactor.create_hand_off_trigger(name) from reactor.job_tables;

-- Offer p_slots slots of p_table to hand-offs until p_seconds from now; 0 seconds withdraws
-- the offer. A row some insert holds is left alone: that insert is taking one of its slots.
-- Without p_refill the offer is only renewed, never raised or made: a tick does that, and a
-- tick also runs while the Realtime feed is silent without the worker knowing yet, when jobs
-- handed to it would wait out their hand-off lease. Claims that follow a Realtime event refill.
create or replace function reactor.stand_by(
  p_table text, p_worker text, p_job_types text[], p_slots integer, p_seconds integer, p_refill boolean
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
begin
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

drop function if exists public.reactor_claim(text, text, text[], integer, integer);

-- 0006's claim, and then the worker's standby: p_standby_seconds > 0 offers the slots this claim
-- left free (p_limit less the jobs it returns, at most max_standby_slots()) for that long; 0
-- withdraws any offer; null leaves it as it is.
create or replace function public.reactor_claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  n integer;
begin
  perform set_config('synchronous_commit', 'off', true);
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  perform reactor.check_job_types(p_job_types);
  if p_standby_seconds is not null then
    perform reactor.check_range('p_standby_seconds', p_standby_seconds, 0, 3600);
  end if;
  return query execute format('select * from reactor.%I($1, $2, $3, $4)', 'claim_' || t)
    using p_worker, p_job_types, p_limit, p_lease_seconds;
  get diagnostics n = row_count;
  if p_standby_seconds is not null then
    perform reactor.stand_by(t, p_worker, p_job_types, least(p_limit - n, reactor.max_standby_slots()),
                             p_standby_seconds, true);
  end if;
end
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

-- 0003's heartbeat; it now also confirms a hand-off: its `started_at` is set.
create or replace function public.reactor_heartbeat(
  p_table text, p_leases jsonb, p_lease_seconds integer default 60
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
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
  return jsonb_build_object('extended', to_jsonb(done), 'stale', reactor.stale_ids(p_leases, done));
end
$$;

-- 0003's reaper; a hand-off nobody confirmed (started_at is null) goes back to pending at once,
-- with its attempt given back and no error: its handler may never have run.
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

drop function if exists public.reactor_tick(text, text, text[], integer, integer, boolean, boolean, bigint);

-- 0004's tick; its claim renews the worker's standby but never raises it (reactor.stand_by).
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
    from public.reactor_claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, null) c;
  end if;
  perform reactor.stand_by(t, p_worker, p_job_types,
                           least(p_limit - jsonb_array_length(claimed), reactor.max_standby_slots()),
                           p_standby_seconds, false);
  execute format($q$
    select extract(epoch from min(run_at) - now()) from public.%1$I
    where status = 'pending' and run_at > now() and job_type = any($1)
  $q$, t) using p_job_types into next_due;
  if p_old_probe is not null then
    execute format('delete from public.%1$I where id = $1 and job_type = reactor.probe_job_type()', t)
      using p_old_probe;
  end if;
  if p_probe then
    execute format($q$
      insert into public.%1$I (job_type, status, payload)
      values (reactor.probe_job_type(), 'cancelled', jsonb_build_object('worker', $1))
      returning id
    $q$, t) using p_worker into probe;
  end if;
  return jsonb_build_object(
    'reaped', reaped,
    'claimed', claimed,
    'next_due_seconds', round(next_due::numeric, 3),
    'stats', case when p_stats then public.reactor_stats(p_table) end,
    'probe', probe
  );
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
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0007_hand_off') on conflict do nothing;
