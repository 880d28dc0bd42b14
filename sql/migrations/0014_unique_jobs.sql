-- reactor 0014: unique jobs. A job may carry a `unique_key`, which a signed-in user may set on
-- insert: while a job of the same type, owner and key is pending or running, another insert of it
-- is refused with SQLSTATE 23505 (PostgREST answers 409) and the existing job's id in the error's
-- details, {"id": 42}, so a frontend that double-submits watches the job it already has. Once that
-- job has finished, the key is free again. Keys are per owner: no user can block another's jobs
-- by guessing their keys. Inserts without a key pay one null check.

-- Give a job table its `unique_key` column, its index and the owner's grants on it.
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

-- Every call of create_job_table() guards the table, and now gives it its key too.
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
  execute format('grant select (%s) on public.%I to authenticated', reactor.owner_columns(), p_name);
  execute format('revoke all on sequence %s from public, anon, authenticated',
    pg_get_serial_sequence(format('public.%I', p_name), 'id'));

  execute format(
    'create or replace trigger zy_reactor_insert_policy before insert on public.%I for each row '
    'when (current_user = ''authenticated'') execute function reactor.insert_policy()', p_name);
end
$$;


select reactor.create_unique_key(name) from reactor.job_tables;

-- Owners read their jobs' keys too.
create or replace function reactor.owner_columns() returns text
language sql immutable as $$
  select 'id, job_type, payload, priority, run_at, max_attempts, user_id, status, attempts, result, '
         'last_error, progress, progress_message, created_at, started_at, completed_at, updated_at, unique_key'
$$;


create or replace function reactor.hand_off() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  taker text;
  herald text;
  n bigint;
  budget integer;
  paused boolean;
  duplicate bigint;
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
  end if;
  if new.unique_key is not null and new.status in ('pending', 'processing') then
    -- Inserts of the same key wait on each other here, so the second sees the first committed.
    perform pg_advisory_xact_lock(hashtextextended(
      concat_ws(':', tg_table_name, new.job_type, new.user_id::text, new.unique_key), 0));
    execute format($q$
      select j.id from public.%I j
      where j.job_type = $1 and j.unique_key = $2 and j.user_id is not distinct from $3
        and j.status in ('pending', 'processing')
      limit 1
    $q$, tg_table_name) using new.job_type, new.unique_key, new.user_id into duplicate;
    if duplicate is not null then
      raise exception 'a % job with unique_key % is already pending or running: job %',
        new.job_type, new.unique_key, duplicate
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
  if new.run_at <= now() and paused is null then
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


revoke all on function reactor.create_unique_key(text) from public;

insert into reactor.schema_migrations (version) values ('0014_unique_jobs') on conflict do nothing;
