-- reactor 0012: limits that hold across the whole fleet, enforced inside the claim.
--
-- Until now the only limit was each worker's own concurrency. A job type may now have, in
-- reactor.job_limits (one row per table and type, the one source of truth; handlers' declarations
-- only create a row that does not exist yet, operators change it at run time):
--
--   * concurrency: at most N of its jobs processing at once, fleet-wide;
--   * rate, per_seconds: at most `rate` claims in any window of `per_seconds`, fleet-wide (the
--     row keeps the last `rate` claim times, so the limit is exact for every window, not a
--     bucket's average);
--   * per_user: at most N of its jobs processing per owner (`user_id`), and a burst from one owner
--     interleaved with everyone else's jobs of the type (claimed round-robin by owner within each
--     priority) rather than served first;
--   * paused: none claimed or handed off until resumed.
--
-- A limited type is never handed off on insert (its insert names a herald, which claims), and its
-- claims take the type's row lock, so two claims of it never both see room for the same slot.
-- Types without a row cost one index probe per claim and per insert. A tick reports when the next
-- claim of a rate-limited type with due jobs waiting may start, so the worker wakes then.

create table if not exists reactor.job_limits (
  job_table text not null references reactor.job_tables (name) on delete cascade,
  job_type text not null,
  concurrency integer check (concurrency >= 0),
  rate integer check (rate between 1 and 10000),
  per_seconds integer check (per_seconds between 1 and 86400),
  per_user integer check (per_user >= 1),
  paused boolean not null default false,
  starts timestamptz[] not null default '{}',  -- the latest claims, at most `rate` of them
  primary key (job_table, job_type),
  check ((rate is null) = (per_seconds is null))
);
revoke all on reactor.job_limits from public;

-- Claim up to p_limit due jobs of the limited type p_job_type from p_table, within its limits.
create or replace function reactor.claim_limited(
  p_table text, p_job_type text, p_worker text, p_limit integer, p_lease_seconds integer
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  lim reactor.job_limits;
  room integer := p_limit;
  running bigint;
  recent timestamptz[];
  picked bigint[];
begin
  select * into lim from reactor.job_limits l
  where l.job_table = p_table and l.job_type = p_job_type
  for update;
  if not found or lim.paused then
    return;
  end if;
  if lim.concurrency is not null then
    execute format('select count(*) from public.%I j where j.status = ''processing'' and j.job_type = $1', p_table)
      using p_job_type into running;
    room := least(room, lim.concurrency - running);
  end if;
  if lim.rate is not null then
    recent := array(select s from unnest(lim.starts) s
                    where s > now() - make_interval(secs => lim.per_seconds) order by s);
    room := least(room, lim.rate - cardinality(recent));
  end if;
  if room <= 0 then
    return;
  end if;
  if lim.per_user is null then
    execute format($q$
      select array_agg(c.id) from (
        select j.id from public.%1$I j
        where j.status = 'pending' and j.job_type = $1 and j.run_at <= now()
        order by j.priority desc, j.run_at, j.id
        limit $2
        for update skip locked
      ) c
    $q$, p_table) using p_job_type, room into picked;
  else
    -- Round-robin by owner within each priority: every owner's first due job, then every owner's
    -- second, as far as each owner's room (per_user less its jobs processing) goes.
    execute format($q$
      with busy as (
        select j.user_id, count(*) n from public.%1$I j
        where j.status = 'processing' and j.job_type = $1
        group by j.user_id
      ), ranked as (
        select j.id, j.priority, j.run_at, coalesce(b.n, 0) busy,
               row_number() over (partition by j.user_id order by j.priority desc, j.run_at, j.id) turn
        from public.%1$I j left join busy b on b.user_id is not distinct from j.user_id
        where j.status = 'pending' and j.job_type = $1 and j.run_at <= now()
      )
      select array_agg(c.id) from (
        select j.id from public.%1$I j join ranked r on r.id = j.id
        where j.status = 'pending' and r.turn <= $3 - r.busy
        order by r.priority desc, r.turn, r.run_at, r.id
        limit $2
        for update of j skip locked
      ) c
    $q$, p_table) using p_job_type, room, lim.per_user into picked;
  end if;
  if picked is null then
    return;
  end if;
  if lim.rate is not null then
    update reactor.job_limits l
    set starts = array(select x.s from (
                   select s from unnest(recent || array_fill(now(), array[cardinality(picked)])) s
                   order by s desc limit lim.rate) x order by x.s)
    where l.job_table = p_table and l.job_type = p_job_type;
  end if;
  return query execute format($q$
    update public.%1$I j
    set status = 'processing', attempts = j.attempts + 1, locked_by = $2,
        lease_expires_at = now() + make_interval(secs => $3),
        lease_token = gen_random_uuid(), started_at = now(), updated_at = now()
    where j.id = any($1)
    returning j.id, j.job_type, j.payload, j.priority, j.attempts, j.max_attempts, j.lease_token,
              j.lease_expires_at, j.run_at, j.created_at, j.started_at, j.user_id
  $q$, p_table) using picked, p_worker, p_lease_seconds;
end
$$;

-- The claim takes the limited types first, each within its limits, then the others as before.
create or replace function public.reactor_claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
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
    return query select * from reactor.claim_limited(t, lt, p_worker, p_limit - n, p_lease_seconds);
    get diagnostics k = row_count;
    n := n + k;
  end loop;
  unlimited := array(select x from unnest(p_job_types) x where x <> all(limited));
  if n < p_limit and cardinality(unlimited) > 0 then
    return query execute format('select * from reactor.%I($1, $2, $3, $4)', 'claim_' || t)
      using p_worker, unlimited, p_limit - n, p_lease_seconds;
    get diagnostics k = row_count;
    n := n + k;
  end if;
  if p_standby_seconds is not null then
    perform reactor.stand_by(t, p_worker, p_job_types, least(p_limit - n, reactor.max_standby_slots()),
                             p_standby_seconds, true);
  end if;
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
begin
  if pg_column_size(new.payload) > 1048576 or reactor.too_deep(new.payload) then  -- max_payload_bytes()
    raise exception '%', reactor.payload_problem(new.payload) using errcode = 'PT413';
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


-- The tick's next due time also covers rate-limited types with due jobs waiting.
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
  rate_due double precision;
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
  -- A rate-limited type with due jobs waiting: when its window lets the next claim through.
  execute format($q$
    select extract(epoch from min(l.starts[1] + make_interval(secs => l.per_seconds)) - now())
    from reactor.job_limits l
    where l.job_table = $1 and l.job_type = any($2) and not l.paused and l.rate is not null
      and cardinality(l.starts) >= l.rate
      and exists (select 1 from public.%1$I j
                  where j.status = 'pending' and j.job_type = l.job_type and j.run_at <= now())
  $q$, t) using t, p_job_types into rate_due;
  if rate_due is not null then
    next_due := least(next_due, greatest(rate_due, 0));
  end if;
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


-- Set p_job_type's limits in p_table: the keys of p_limits that are given (concurrency, rate,
-- per_seconds, per_user, paused; null clears a limit), the others kept. Returns the row as stored,
-- or {} when no limit is left and the type is not paused (the row is then deleted).
create or replace function public.reactor_set_limits(p_table text, p_job_type text, p_limits jsonb)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  lim reactor.job_limits;
  key text;
begin
  perform reactor.check_job_types(array[p_job_type]);
  if jsonb_typeof(p_limits) is distinct from 'object' then
    raise exception 'p_limits must be a JSON object';
  end if;
  for key in select jsonb_object_keys(p_limits) loop
    if key not in ('concurrency', 'rate', 'per_seconds', 'per_user', 'paused') then
      raise exception 'p_limits: unknown limit %; give concurrency, rate, per_seconds, per_user or paused', key;
    end if;
  end loop;
  insert into reactor.job_limits (job_table, job_type) values (t, p_job_type) on conflict do nothing;
  select * into lim from reactor.job_limits l where l.job_table = t and l.job_type = p_job_type for update;
  begin
    update reactor.job_limits l set
      concurrency = case when p_limits ? 'concurrency' then (p_limits ->> 'concurrency')::integer else l.concurrency end,
      rate = case when p_limits ? 'rate' then (p_limits ->> 'rate')::integer else l.rate end,
      per_seconds = case when p_limits ? 'per_seconds' then (p_limits ->> 'per_seconds')::integer else l.per_seconds end,
      per_user = case when p_limits ? 'per_user' then (p_limits ->> 'per_user')::integer else l.per_user end,
      paused = case when p_limits ? 'paused' then coalesce((p_limits ->> 'paused')::boolean, false) else l.paused end
    where l.job_table = t and l.job_type = p_job_type
    returning * into lim;
  exception when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception 'p_limits: %', sqlerrm
      using hint = 'concurrency 0 or more, rate 1 to 10000 with per_seconds 1 to 86400, per_user 1 or more, paused true or false';
  end;
  if lim.concurrency is null and lim.rate is null and lim.per_user is null and not lim.paused then
    delete from reactor.job_limits l where l.job_table = t and l.job_type = p_job_type;
    return '{}';
  end if;
  return jsonb_strip_nulls(jsonb_build_object(
    'concurrency', lim.concurrency, 'rate', lim.rate, 'per_seconds', lim.per_seconds,
    'per_user', lim.per_user, 'paused', lim.paused));
end
$$;

-- The limits a worker's handlers declare, {"type": {limits as reactor_set_limits takes}}, set for
-- each type that has no row yet: a declaration never overrides what an operator set. Returns
-- every limited type of p_table with its limits as stored (reactor_limits).
create or replace function public.reactor_declare_limits(p_table text, p_limits jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  item record;
begin
  if jsonb_typeof(p_limits) is distinct from 'object' then
    raise exception 'p_limits must be a JSON object of job types';
  end if;
  for item in select key, value from jsonb_each(p_limits) loop
    if not exists (select 1 from reactor.job_limits l where l.job_table = t and l.job_type = item.key) then
      perform public.reactor_set_limits(t, item.key, item.value);
    end if;
  end loop;
  return public.reactor_limits(t);
end
$$;

-- Every limited or paused type of p_table: {"type": {limits}}.
create or replace function public.reactor_limits(p_table text) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_object_agg(l.job_type, jsonb_strip_nulls(jsonb_build_object(
           'concurrency', l.concurrency, 'rate', l.rate, 'per_seconds', l.per_seconds,
           'per_user', l.per_user, 'paused', l.paused))), '{}')
  from reactor.job_limits l where l.job_table = reactor.job_table(p_table)
$$;

revoke all on function reactor.claim_limited(text, text, text, integer, integer) from public;
revoke all on function public.reactor_set_limits(text, text, jsonb) from public, anon, authenticated;
revoke all on function public.reactor_declare_limits(text, jsonb) from public, anon, authenticated;
revoke all on function public.reactor_limits(text) from public, anon, authenticated;
grant execute on function public.reactor_set_limits(text, text, jsonb) to service_role;
grant execute on function public.reactor_declare_limits(text, jsonb) to service_role;
grant execute on function public.reactor_limits(text) to service_role;

insert into reactor.schema_migrations (version) values ('0012_flow_control') on conflict do nothing;
