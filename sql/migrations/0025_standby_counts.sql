-- reactor 0025: an offer renewed before it runs out, and no insert passing a renewing claim by.
-- A worker renewed its standby only once every slot it offered was taken, so until the renewing
-- claim committed (on a hosted project the hand-off's way to the worker and the claim's way back,
-- 20 ms and more) an insert found no offer and waited to be claimed: about every tenth job at 40 a
-- second, the p99 of pickup. A renewal while hand-offs are still on their way would offer their
-- slots twice, so the offer now counts its hand-offs (`handed`) and the worker's claim says how
-- many it has heard of (reactor_claim_jobs' p_heard): the new offer leaves out the ones it has not.
-- And an insert passed by an offer a renewing claim held (`for update skip locked`); now, when
-- every offer with a free slot is held, it waits for one up to standby_lock_wait() (10 ms).

alter table reactor.standby add column if not exists handed bigint not null default 0;

-- How long an insert waits for a standby row another transaction holds, when every standby with
-- a free slot is held, and a claim for its own standby row held by an insert: either commits
-- within it, and no other user's transaction holds up an insert or a claim for longer.
create or replace function reactor.standby_lock_wait() returns text
language sql immutable as $$ select '10ms' $$;

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
-- An insert that finds every offer with a free slot held by another transaction waits for one
-- at most standby_lock_wait(); the slot it takes counts in the offer's `handed`.
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
  lock_wait text;
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
    if taker is null and exists (
      select 1 from reactor.standby s
      where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
        and new.job_type = any(s.job_types)
    ) then
      -- Every offer with a free slot is held, by a claim renewing it or an insert taking a slot:
      -- wait standby_lock_wait() for one, and past that leave the row to be claimed.
      lock_wait := current_setting('lock_timeout');
      begin
        perform set_config('lock_timeout', reactor.standby_lock_wait(), true);
        select s.worker into taker from reactor.standby s
        where s.job_table = tg_table_name and s.slots > 0 and s.expires_at > now()
          and new.job_type = any(s.job_types)
        order by s.slots desc
        limit 1
        for update;
        perform set_config('lock_timeout', lock_wait, true);
      exception when lock_not_available then
        taker := null;
      end;
    end if;
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
  update reactor.standby s set slots = s.slots - 1, handed = s.handed + 1
  where s.job_table = tg_table_name and s.worker = taker;
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

-- Offer p_slots slots of p_table to hand-offs until p_seconds from now; 0 seconds withdraws the
-- offer. A row some insert holds is left alone (a claim first waits standby_lock_wait() for it):
-- that insert is taking one of its slots. Without p_refill the offer is only renewed, never raised
-- or made: a tick does that, and a tick also runs while the Realtime feed is silent without the
-- worker knowing yet, when jobs handed to it would wait out their hand-off lease. Claims that
-- follow a Realtime event refill. A tick also deletes the table's standby rows that expired more
-- than a minute ago, which every hand-off would otherwise read past.
-- A claim renews an offer whenever the worker asks, also while hand-offs from it are on their way:
-- with p_heard, the hand-offs the worker has heard of in the table, the offer is p_slots less
-- those made (`handed`) that the worker had not heard of, so no slot is offered twice. The count
-- starts at the worker's own when the offer is made, and follows it up when it is ahead.
create or replace function reactor.stand_by(
  p_table text, p_worker text, p_job_types text[], p_slots integer, p_seconds integer, p_refill boolean,
  p_heard bigint default null
) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  held reactor.standby;
  in_flight bigint := 0;
  unconfirmed bigint;
  now_exactly timestamptz;
  lock_wait text;
begin
  if not p_refill then
    delete from reactor.standby s where s.ctid = any(array(
      select e.ctid from reactor.standby e
      where e.job_table = p_table and e.expires_at < now() - interval '1 minute'
      for update skip locked));
  end if;
  select * into held from reactor.standby s where s.job_table = p_table and s.worker = p_worker for update skip locked;
  if held.worker is null and p_refill
     and exists (select 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker) then
    -- An insert holds the offer, taking a slot: wait for it standby_lock_wait(), as an insert
    -- waits for a renewing claim, and past that leave the offer as it is.
    lock_wait := current_setting('lock_timeout');
    begin
      perform set_config('lock_timeout', reactor.standby_lock_wait(), true);
      select * into held from reactor.standby s where s.job_table = p_table and s.worker = p_worker for update;
      perform set_config('lock_timeout', lock_wait, true);
    exception when lock_not_available then
      held := null;
    end;
  end if;
  if held.worker is not null then
    if p_seconds > 0 then
      if p_refill and p_heard is not null and held.handed > p_heard then
        -- Hand-offs the worker had not heard of when it asked: as many as are still unconfirmed and
        -- within their 5 s lease (one lost on the way counts no more once that lease ends).
        now_exactly := clock_timestamp();
        execute format($q$
          select count(*) from public.%I j
          where j.status = 'processing' and j.lease_expires_at > $1 and j.lease_expires_at <= $2
            and j.locked_by = $3 and j.started_at is null
        $q$, p_table) using now_exactly, now_exactly + interval '5 seconds', p_worker into unconfirmed;
        in_flight := least(held.handed - p_heard, unconfirmed);
      end if;
      update reactor.standby s
      set job_types = p_job_types, expires_at = now() + make_interval(secs => p_seconds),
          slots = case when p_refill then greatest(p_slots - in_flight, 0) else least(s.slots, p_slots) end,
          handed = greatest(s.handed, coalesce(p_heard, s.handed))
      where s.job_table = p_table and s.worker = p_worker;
    else
      delete from reactor.standby s where s.job_table = p_table and s.worker = p_worker;
    end if;
  elsif p_seconds > 0 and p_refill
        and not exists (select 1 from reactor.standby s where s.job_table = p_table and s.worker = p_worker) then
    insert into reactor.standby (job_table, worker, job_types, slots, expires_at, handed)
    values (p_table, p_worker, p_job_types, p_slots, now() + make_interval(secs => p_seconds), coalesce(p_heard, 0))
    on conflict do nothing;
  end if;
end
$$;
drop function if exists reactor.stand_by(text, text, text[], integer, integer, boolean);

-- The claim: the limited types first, each within its limits (claim_within_limits), then the
-- others; then the standby, with the worker's count of hand-offs heard (reactor.stand_by).
create or replace function reactor.claim_and_stand_by(
  p_table text, p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer,
  p_standby_seconds integer, p_heard bigint
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
)
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  n integer := 0;
  k integer;
  limited text[];
  unlimited text[];
  lt text;
begin
  perform set_config('synchronous_commit', 'off', true);
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  perform reactor.check_job_types(p_job_types);
  if p_standby_seconds is not null then
    perform reactor.check_range('p_standby_seconds', p_standby_seconds, 0, 3600);
  end if;
  select coalesce(array_agg(l.job_type order by l.job_type), '{}') into limited
  from reactor.job_limits l where l.job_table = t and l.job_type = any(p_job_types);
  foreach lt in array limited loop
    exit when n >= p_limit;
    return query select * from reactor.claim_within_limits(t, lt, p_worker, p_limit - n, p_lease_seconds);
    get diagnostics k = row_count;
    n := n + k;
  end loop;
  unlimited := array(select x from unnest(p_job_types) x where x <> all(limited));
  if n < p_limit and cardinality(unlimited) > 0 then
    return query execute format('select * from reactor.%I($1, $2, $3, $4)', 'claim_due_' || t)
      using p_worker, unlimited, p_limit - n, p_lease_seconds;
    get diagnostics k = row_count;
    n := n + k;
  end if;
  if p_standby_seconds is not null then
    perform reactor.stand_by(t, p_worker, p_job_types, least(p_limit - n, reactor.max_standby_slots()),
                             p_standby_seconds, true, p_heard);
  end if;
end
$$;

-- The claim without a count of hand-offs heard: the tick's, and reactor_claim's and
-- reactor_claim_batch's for callers that never stand by or count nothing.
create or replace function reactor.claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid, resumed integer, parent_id bigint
)
language sql volatile set search_path = pg_catalog, pg_temp as $$
  select * from reactor.claim_and_stand_by(p_table, p_worker, p_job_types, p_limit, p_lease_seconds,
                                           p_standby_seconds, null)
$$;

-- The worker's claim: reactor_claim_batch's array built as json rather than jsonb, which cost more
-- than the claim itself (docs/benchmarks.md, "Where a no-op job's CPU went"). A function's return
-- type cannot change in place, hence the new name; reactor_claim_batch stays for workers of
-- earlier versions during a rolling upgrade. p_heard is the worker's count of the hand-offs it
-- has heard of in the table, which its standby's renewal needs (reactor.stand_by); a worker of an
-- earlier version sends none, and its standby is renewed as before.
create or replace function public.reactor_claim_jobs(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0, p_heard bigint default null
) returns json
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(json_agg(json_build_object(
           'id', c.id, 'job_type', c.job_type, 'payload', c.payload, 'priority', c.priority,
           'attempt', c.attempt, 'max_attempts', c.max_attempts, 'lease_token', c.lease_token,
           'run_at', c.run_at, 'created_at', c.created_at, 'user_id', c.user_id,
           'resumed', c.resumed, 'parent_id', c.parent_id
         ) order by c.ordinality), '[]')
  from reactor.claim_and_stand_by(p_table, p_worker, p_job_types, p_limit, p_lease_seconds,
                                  p_standby_seconds, p_heard)
       with ordinality as c
$$;
drop function if exists public.reactor_claim_jobs(text, text, text[], integer, integer, integer);
revoke all on function public.reactor_claim_jobs(text, text, text[], integer, integer, integer, bigint)
  from public, anon, authenticated;
grant execute on function public.reactor_claim_jobs(text, text, text[], integer, integer, integer, bigint)
  to service_role;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0025_standby_counts') on conflict do nothing;
