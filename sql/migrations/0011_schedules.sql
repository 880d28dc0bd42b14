-- reactor 0011: schedules, recurring jobs declared next to their handler or in SQL.
--
-- A schedule enqueues one job into a job table at each time of a cron expression, read in an IANA
-- time zone (reactor.schedules). Workers declare theirs (`@app.cron`) and fire them with
-- public.reactor_fire_schedules: they compute the times in Python, and the SQL keeps each time
-- once only across any number of workers, under the schedule's row lock, with `fired_through`:
-- a time is enqueued only when it is later than every time enqueued before, due by the database's
-- clock and within the schedule's catch-up window; older missed times are skipped. An operator
-- declares schedules in SQL with reactor.schedule(), and, where the project has pg_cron, may leave
-- one to pg_cron (p_engine => 'pg_cron'), as reaping and pruning (reactor.schedule_maintenance()).
-- public.reactor_schedules lists them for `reactor stats`. sql/schema.sql, section 9b, says more.

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

revoke all on function reactor.schedule_json(reactor.schedules),
  reactor.schedule(text, text, text, text, jsonb, text, integer, integer, integer, text),
  reactor.unschedule(text), reactor.fire_times(text, text, text, text, timestamptz[]),
  reactor.fire_schedule(text), reactor.schedule_maintenance(text, interval) from public;
revoke all on function public.reactor_fire_schedules(text, jsonb, jsonb, jsonb),
  public.reactor_schedules(text) from public, anon, authenticated;
grant execute on function public.reactor_fire_schedules(text, jsonb, jsonb, jsonb),
  public.reactor_schedules(text) to service_role;

insert into reactor.schema_migrations (version) values ('0011_schedules') on conflict do nothing;
