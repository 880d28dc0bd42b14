-- reactor 0004: the tick, one call that does a worker's periodic chores.
--
-- An idle worker used to make a request for each chore: a safety sweep (claim), a reap, queue
-- statistics, and a probe row inserted and then deleted to check that Realtime still delivers.
-- The tick does them all in one request, and also says when the next scheduled job falls due, so
-- the worker can set a timer instead of waiting for a sweep. Idle, a worker now ticks two to
-- three times a minute.

-- Probe rows: inserted as `cancelled` so no worker claims them, heard over Realtime by the worker
-- that sent them, and left out of the statistics.
create or replace function reactor.probe_job_type() returns text
language sql immutable as $$ select 'reactor.probe' $$;

-- Queue health for one table (as in 0003), without counting the workers' probe rows, which are
-- always cancelled.
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
                         where status = 'processing' and lease_expires_at < now())
    )
  $q$, t) using t into stats;
  return stats;
end
$$;

-- One worker's chores for one table, in this order:
--   1. reap expired leases (as reactor_reap);
--   2. claim up to p_limit due jobs (as reactor_claim; p_limit 0 claims nothing);
--   3. find when the next pending job of these types falls due, in seconds from now, measured on
--      the database's clock so a skewed worker clock cannot make it early or late;
--   4. when p_stats, the queue statistics (as reactor_stats);
--   5. delete the probe row p_old_probe (only if it is a probe row), and when p_probe, insert a
--      new one for this worker; the insert reaches Realtime when this call commits.
-- Returns {"reaped": {...}, "claimed": [rows as reactor_claim returns them],
--          "next_due_seconds": number or null, "stats": {...} or null, "probe": id or null}.
create or replace function reactor.check_job_types(p_job_types text[]) returns void
language plpgsql immutable as $$
begin
  if p_job_types is null or cardinality(p_job_types) = 0 or array_position(p_job_types, null) is not null then
    raise exception 'p_job_types must list the job types this worker handles';
  end if;
end
$$;

create or replace function public.reactor_tick(
  p_table text, p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer default 60,
  p_stats boolean default false, p_probe boolean default false, p_old_probe bigint default null
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
  reaped := public.reactor_reap(p_table);
  if p_limit > 0 then
    select coalesce(jsonb_agg(to_jsonb(c)), '[]') into claimed
    from public.reactor_claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds) c;
  end if;
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
    where n.nspname = 'public' and p.proname in ('reactor_stats', 'reactor_tick')
  loop
    execute format('revoke all on function %s from public, anon, authenticated', fn);
    execute format('grant execute on function %s to service_role', fn);
  end loop;
end
$$;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0004_tick') on conflict do nothing;
