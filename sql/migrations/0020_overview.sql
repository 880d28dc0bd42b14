-- reactor 0020: the dashboard's overview without reading the whole table. reactor_stats counts
-- every row by status (a million rows: about 280 ms, every refresh). reactor_overview answers the
-- same questions from partial indexes for the statuses that stay small (pending, processing,
-- waiting, failed; a new index each for waiting and failed jobs) and from the planner's
-- statistics for the two that only grow until pruned (completed and cancelled), which it names
-- in "estimated".

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

-- Every call of create_job_table() guards the table, and now gives it the overview's indexes.
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

select reactor.create_overview_indexes(name) from reactor.job_tables;

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

revoke all on function public.reactor_overview(text) from public, anon, authenticated;
grant execute on function public.reactor_overview(text) to service_role;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0020_overview') on conflict do nothing;
