-- reactor 0019: unique jobs with a window. reactor.set_unique_window(table, job_type, seconds)
-- keeps a job's `unique_key` taken for that long after the job was inserted, whether it is still
-- pending or running or has finished, so a frontend's repeat within the window gets the first
-- job (409 with its id) even when that job is done. Without a window a key is free again once its
-- job has finished, as before; a type with a window pays one more index lookup per keyed insert.

create table if not exists reactor.unique_windows (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  seconds integer not null check (seconds between 1 and 31536000),
  primary key (job_table, job_type)
);
revoke all on reactor.unique_windows from public;

-- Keep p_job_type's keys in p_table taken for p_seconds after insert (null: only while the job
-- is pending or running). Returns the window in seconds, or null.
create or replace function reactor.set_unique_window(p_table text, p_job_type text, p_seconds integer)
returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  perform reactor.check_job_types(array[p_job_type]);
  if p_seconds is null then
    delete from reactor.unique_windows where job_table = t and job_type = p_job_type;
    return null;
  end if;
  perform reactor.check_range('p_seconds', p_seconds, 1, 31536000);
  insert into reactor.unique_windows values (t, p_job_type, p_seconds)
  on conflict (job_table, job_type) do update set seconds = excluded.seconds;
  execute format('create index if not exists %I on public.%I (job_type, unique_key, user_id) where unique_key is not null',
    t || '_unique_window_idx', t);
  return p_seconds;
end
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
  unique_seconds integer;
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
  end if;
  if new.unique_key is not null and new.status in ('pending', 'processing') then
    -- Inserts of the same key wait on each other here, so the second sees the first committed.
    perform pg_advisory_xact_lock(hashtextextended(
      concat_ws(':', tg_table_name, new.job_type, new.user_id::text, new.unique_key), 0));
    select w.seconds into unique_seconds from reactor.unique_windows w
    where w.job_table = tg_table_name and w.job_type = new.job_type;
    if unique_seconds is null then
      execute format($q$
        select j.id from public.%I j
        where j.job_type = $1 and j.unique_key = $2 and j.user_id is not distinct from $3
          and j.status in ('pending', 'processing')
        limit 1
      $q$, tg_table_name) using new.job_type, new.unique_key, new.user_id into duplicate;
    else
      -- The type's window: a key stays taken for that long after its job was inserted, whatever
      -- became of the job, and while the job is pending or running.
      execute format($q$
        select j.id from public.%I j
        where j.job_type = $1 and j.unique_key = $2 and j.user_id is not distinct from $3
          and (j.status in ('pending', 'processing') or j.created_at > now() - make_interval(secs => $4))
        order by j.id desc limit 1
      $q$, tg_table_name) using new.job_type, new.unique_key, new.user_id, unique_seconds into duplicate;
    end if;
    if duplicate is not null then
      raise exception 'a % job with unique_key % is already pending or running%: job %',
        new.job_type, new.unique_key,
        case when unique_seconds is not null then format(', or was inserted in the last %s s', unique_seconds) else '' end,
        duplicate
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

revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0019_unique_window') on conflict do nothing;
