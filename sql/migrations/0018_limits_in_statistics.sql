-- reactor 0018: the statistics carry each limited job type's limits with its running jobs and,
-- for a rate, the starts in the current window, so that a worker's /metrics shows how close each
-- limit is to binding (README, "Limits across the fleet").

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

insert into reactor.schema_migrations (version) values ('0018_limits_in_statistics') on conflict do nothing;
