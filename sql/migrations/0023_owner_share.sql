-- reactor 0023: one owner's share of reactor's Realtime budget. Until now one signed-in user could
-- insert a burst as large as the insert policy's per-minute limit (60 by default) within a second
-- and spend the whole second's budget (50 messages): every other job of that second was then
-- withheld from Realtime and waited for a tick. Now an owner's rows are announced at most
-- per_owner_per_second times in any second (5 by default); past that, the next row names a herald,
-- whose claim sweeps the owner's backlog, and the rows after it name nobody. The project's own rows
-- (no owner) keep the whole budget. Change the share with an update; it applies at once.

alter table reactor.realtime_budget
  add column if not exists per_owner_per_second integer not null default 5 check (per_owner_per_second >= 0);

-- The hand-off, which fires last on every insert. It refuses a payload out of the bounds every row
-- obeys. A row that is pending and due at once then takes a slot from a worker standing by for
-- its type (section 6), in the same statement: it is written already `processing`, locked by that
-- worker, with a lease token and a 5 s lease, and `started_at` null until the worker confirms it.
-- The insert's Realtime event is all the worker needs to start the handler. A pending row no
-- standby worker could take names one worker standing by for its type in `locked_by`, its herald,
-- which claims it or sets a timer for its run_at (on a pending row `locked_by` means only that).
-- Each worker hears only the rows that name it, so a job costs one Realtime message however many
-- workers run. Past reactor's Realtime budget for the second, the first row still names a herald,
-- whose one claim sweeps the backlog, and the rows after it name nobody and cost nothing. One
-- owner's rows get a share of that budget, per_owner_per_second in the last second: past it, the
-- next row names a herald and the rows after it nobody, so no user's burst spends the messages
-- that announce everyone else's jobs. Rows without an owner (the project's own) have no share.
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
  share integer;
  owned bigint;  -- the owner's rows in the last second, this one not counted; null: no owner
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
  if new.user_id is not null then
    share := (select b.per_owner_per_second from reactor.realtime_budget b);
    execute format($q$
      select count(*) from (select 1 from public.%I
                            where user_id = $1 and created_at > now() - interval '1 second' limit $2) s
    $q$, tg_table_name) using new.user_id, share + 1 into owned;
  end if;
  if new.run_at <= now() and paused is null and coalesce(owned < share, true) then
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
  if owned > share then
    perform nextval('reactor.withheld');
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

insert into reactor.schema_migrations (version) values ('0023_owner_share') on conflict do nothing;
