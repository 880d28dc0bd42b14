-- reactor 0010: one Realtime message per job, whatever the fleet size, within a budget.
--
-- Until now every worker subscribed to every insert of its job types and every change back to
-- `pending`, so N workers cost N Realtime messages per job, and hosted Supabase bills and limits
-- every copy (docs/hosted-supabase.md, "Message quota"). From this version each worker hears only
-- the rows that name it in `locked_by` (a Realtime filter `locked_by=eq.<worker>`), and an insert
-- names one worker at most:
--
--   * a job handed off (0007) names its taker, as before;
--   * a pending job no standby worker could take names one worker standing by for its type (the one
--     with the most free slots), which claims it, or sets a timer for its run_at: the job's herald.
--     `locked_by` on a pending row means only that; a claim overwrites it;
--   * a worker's probe row names the worker.
--
-- Every message counts against reactor's Realtime budget, reactor.realtime_budget (default 50 a
-- second, half the Free plan's quota), counted per second with sequences, which no transaction
-- waits on. The second's first insert over the budget still names a herald, whose one claim
-- takes the backlog as far as its slots go: at most budget + 1 messages a second. The inserts
-- after it name nobody and send no message; workers claim them when a slot frees, at the next
-- herald's claim or on their next tick, and tick fast for a minute once a tick sees inserts
-- withheld. reactor_tick and reactor_stats report the total withheld.
--
-- Worker ids are now at most 64 bytes: Realtime keeps only fields of up to 64 bytes in a record it
-- cuts for size, and a hand-off whose `locked_by` was cut would reach nobody.

create or replace function reactor.check_worker(p_worker text) returns void
language plpgsql immutable as $$
begin
  if p_worker is null or p_worker = '' or octet_length(p_worker) > 64 then
    raise exception 'p_worker must be a worker id of 1 to 64 bytes (Realtime cuts longer fields from big records)';
  end if;
end
$$;

create table if not exists reactor.realtime_budget (
  only_row boolean primary key default true check (only_row),
  messages_per_second integer not null default 50 check (messages_per_second >= 0)
);
insert into reactor.realtime_budget default values on conflict do nothing;
revoke all on reactor.realtime_budget from public;

create sequence if not exists reactor.announced_second;  -- the second reactor.announced counts
create sequence if not exists reactor.announced;  -- messages announced in that second
create sequence if not exists reactor.withheld;  -- inserts left unannounced, in all
revoke all on sequence reactor.announced_second, reactor.announced, reactor.withheld from public;

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

create or replace function reactor.realtime_state() returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object(
    'budget_per_second', (select b.messages_per_second from reactor.realtime_budget b),
    'withheld', (select case when s.is_called then s.last_value else 0 end from reactor.withheld s))
$$;

create or replace function reactor.hand_off() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  taker text;
  herald text;
  n bigint;
  budget integer;
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
  end if;
  if new.status <> 'pending' then
    return new;
  end if;
  if new.run_at <= now() then
    select s.worker into taker from reactor.standby s
    where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
      and new.job_type = any(s.job_types)
    order by s.slots desc
    limit 1
    for update skip locked;
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

-- Statistics also say reactor's Realtime budget and how many inserts it has withheld in all.
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
                         where status = 'processing' and lease_expires_at < now()),
      'realtime', reactor.realtime_state()
    )
  $q$, t) using t into stats;
  return stats;
end
$$;

-- The tick's probe row names its worker, the only one that hears it, and the tick reports the
-- inserts withheld in all, so workers see the budget reached.
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

revoke all on function reactor.announcement(), reactor.realtime_state() from public;

insert into reactor.schema_migrations (version) values ('0010_one_message_per_job') on conflict do nothing;
