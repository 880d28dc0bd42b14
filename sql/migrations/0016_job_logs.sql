-- reactor 0016: job logs. A running job writes lines (`job.log(...)`) to public.job_logs, which
-- the job's owner reads under RLS and watches over Realtime (filter `job_id=eq.<id>`); only the
-- holder of the job's lease writes them, at most reactor.max_log_lines() a job, and they are
-- deleted with their job. Every error a job's row records (last_error) becomes a line too.

create or replace function reactor.max_log_lines() returns integer
language sql immutable as 'select 1000';

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

-- Every call of create_job_table() guards the table, and now gives it its log triggers.
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
  execute format('grant select (%s) on public.%I to authenticated', reactor.owner_columns(), p_name);
  execute format('revoke all on sequence %s from public, anon, authenticated',
    pg_get_serial_sequence(format('public.%I', p_name), 'id'));

  execute format(
    'create or replace trigger zy_reactor_insert_policy before insert on public.%I for each row '
    'when (current_user = ''authenticated'') execute function reactor.insert_policy()', p_name);
end
$$;

select reactor.create_log_triggers(name) from reactor.job_tables;

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

revoke all on function public.reactor_log(text, jsonb) from public, anon, authenticated;
grant execute on function public.reactor_log(text, jsonb) to service_role;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0016_job_logs') on conflict do nothing;
