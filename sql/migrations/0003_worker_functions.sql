-- reactor 0003: the worker's functions, one atomic SQL function per operation.
--
-- Entry points are `public.reactor_*` (the schema PostgREST exposes), SECURITY DEFINER with an
-- empty search path, executable by `service_role` only. Batches are JSON arrays of objects, at
-- most reactor.max_batch() items; a malformed item rejects the whole call before anything
-- changes. Complete, fail, release, heartbeat and progress act only when the caller holds the
-- job's current lease token, and report the items whose token was stale (River #1302).

-- Validate a batch and return it as rows. `p_kind` says which keys an item may carry:
--   lease    {id, lease_token}
--   complete {id, lease_token, result?}
--   fail     {id, lease_token, error, retry_at?, permanent?}
create or replace function reactor.batch_items(p_items jsonb, p_kind text)
returns table (id bigint, lease_token uuid, result jsonb, error text, retry_at timestamptz, permanent boolean)
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  allowed text[] := case p_kind
    when 'lease' then array['id', 'lease_token']
    when 'complete' then array['id', 'lease_token', 'result']
    when 'fail' then array['id', 'lease_token', 'error', 'retry_at', 'permanent']
  end;
  item jsonb;
  n integer := 0;
  key text;
  seen bigint[] := '{}';
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    raise exception 'items must be a JSON array of objects';
  end if;
  if jsonb_array_length(p_items) > reactor.max_batch() then
    raise exception 'a batch holds at most % items, got %', reactor.max_batch(), jsonb_array_length(p_items);
  end if;
  for item in select value from jsonb_array_elements(p_items) loop
    n := n + 1;
    if jsonb_typeof(item) <> 'object' then
      raise exception 'item %: must be a JSON object', n;
    end if;
    for key in select jsonb_object_keys(item) loop
      if not key = any(allowed) then
        raise exception 'item %: unknown key "%"', n, left(key, 100);
      end if;
    end loop;
    if jsonb_typeof(item -> 'id') is distinct from 'number'
       or (item ->> 'id') !~ '^[0-9]{1,18}$' or (item ->> 'id')::bigint < 1 then
      raise exception 'item %: id must be a positive integer', n;
    end if;
    id := (item ->> 'id')::bigint;
    if id = any(seen) then
      raise exception 'item %: job % appears twice in one batch', n, id;
    end if;
    seen := seen || id;
    if jsonb_typeof(item -> 'lease_token') is distinct from 'string' then
      raise exception 'item %: lease_token is missing', n;
    end if;
    begin
      lease_token := (item ->> 'lease_token')::uuid;
    exception when invalid_text_representation then
      raise exception 'item %: lease_token is not a UUID', n;
    end;
    result := item -> 'result';
    error := null;
    retry_at := null;
    permanent := false;
    if p_kind = 'fail' then
      if jsonb_typeof(item -> 'error') is distinct from 'string' or item ->> 'error' = '' then
        raise exception 'item %: error must be a non-empty string', n;
      end if;
      error := left(item ->> 'error', 10000);
      if item ? 'retry_at' and jsonb_typeof(item -> 'retry_at') <> 'null' then
        begin
          retry_at := (item ->> 'retry_at')::timestamptz;
        exception when others then
          raise exception 'item %: retry_at must be an ISO 8601 timestamp', n;
        end;
      end if;
      if item ? 'permanent' and jsonb_typeof(item -> 'permanent') <> 'null' then
        if jsonb_typeof(item -> 'permanent') <> 'boolean' then
          raise exception 'item %: permanent must be true or false', n;
        end if;
        permanent := (item -> 'permanent')::boolean;
      end if;
    end if;
    return next;
  end loop;
end
$$;

-- The ids of a validated batch that are not in p_done: the items whose lease was stale.
create or replace function reactor.stale_ids(p_items jsonb, p_done bigint[]) returns jsonb
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select to_jsonb(array(select (x ->> 'id')::bigint from jsonb_array_elements(p_items) x
                        where not (x ->> 'id')::bigint = any(p_done) order by 1))
$$;

create or replace function reactor.check_worker(p_worker text) returns void
language plpgsql immutable as $$
begin
  if p_worker is null or p_worker = '' or length(p_worker) > 200 then
    raise exception 'p_worker must be a worker id of 1 to 200 characters';
  end if;
end
$$;

create or replace function reactor.check_lease_seconds(p_lease_seconds integer) returns void
language sql immutable as $$
  select reactor.check_range('p_lease_seconds', p_lease_seconds, 1, 86400)
$$;

-- Claim up to p_limit due, pending jobs of the given types, highest priority first, then oldest
-- run_at. Each claimed job counts an attempt and gets a fresh lease token.
create or replace function public.reactor_claim(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60
) returns table (
  id bigint, job_type text, payload jsonb, priority integer, attempt integer, max_attempts integer,
  lease_token uuid, lease_expires_at timestamptz, run_at timestamptz, created_at timestamptz,
  started_at timestamptz, user_id uuid
)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
begin
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  if p_job_types is null or cardinality(p_job_types) = 0 or array_position(p_job_types, null) is not null then
    raise exception 'p_job_types must list the job types this worker handles';
  end if;
  return query execute format($q$
    with picked as (
      select j.id from public.%1$I j
      where j.status = 'pending' and j.run_at <= now() and j.job_type = any($1)
      order by j.priority desc, j.run_at, j.id
      limit $2
      for update skip locked
    ), claimed as (
      update public.%1$I j
      set status = 'processing', attempts = j.attempts + 1, locked_by = $3,
          lease_expires_at = now() + make_interval(secs => $4), lease_token = gen_random_uuid(),
          started_at = now(), updated_at = now()
      from picked where j.id = picked.id
      returning j.*
    )
    select c.id, c.job_type, c.payload, c.priority, c.attempts, c.max_attempts, c.lease_token,
           c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id
    from claimed c order by c.priority desc, c.run_at, c.id
  $q$, t) using p_job_types, p_limit, p_worker, p_lease_seconds;
end
$$;

-- Extend the leases of running jobs. Returns {"extended": [ids], "stale": [ids]}.
create or replace function public.reactor_heartbeat(
  p_table text, p_leases jsonb, p_lease_seconds integer default 60
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  perform reactor.check_lease_seconds(p_lease_seconds);
  execute format($q$
    with hit as (
      update public.%1$I j
      set lease_expires_at = now() + make_interval(secs => $1), updated_at = now()
      from reactor.batch_items($2, 'lease') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_lease_seconds, p_leases into done;
  return jsonb_build_object('extended', to_jsonb(done), 'stale', reactor.stale_ids(p_leases, done));
end
$$;

-- Finish running jobs with their results. Returns {"completed": [ids], "stale": [ids]}.
create or replace function public.reactor_complete(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'completed', result = i.result, progress = 100, completed_at = now(),
          lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'complete') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_jobs into done;
  return jsonb_build_object('completed', to_jsonb(done), 'stale', reactor.stale_ids(p_jobs, done));
end
$$;

-- Record failed attempts. Each job goes back to pending at its retry_at (default: backoff), or to
-- `failed` (the dead letter) when it is permanent or its attempts are spent.
-- Returns {"retried": [ids], "failed": [ids], "stale": [ids]}.
create or replace function public.reactor_fail(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  retried bigint[];
  dead bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = case when i.permanent or j.attempts >= j.max_attempts then 'failed' else 'pending' end,
          run_at = case when i.permanent or j.attempts >= j.max_attempts then j.run_at
                        else coalesce(i.retry_at, now() + reactor.backoff(j.attempts)) end,
          completed_at = case when i.permanent or j.attempts >= j.max_attempts then now() end,
          last_error = i.error, locked_by = null, lease_token = null, lease_expires_at = null,
          updated_at = now()
      from reactor.batch_items($1, 'fail') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id, j.status
    ) select coalesce(array_agg(id order by id) filter (where status = 'pending'), '{}'),
             coalesce(array_agg(id order by id) filter (where status = 'failed'), '{}')
      from hit
  $q$, t) using p_jobs into retried, dead;
  return jsonb_build_object('retried', to_jsonb(retried), 'failed', to_jsonb(dead),
                            'stale', reactor.stale_ids(p_jobs, retried || dead));
end
$$;

-- Hand running jobs back without spending an attempt (graceful shutdown).
-- Returns {"released": [ids], "stale": [ids]}.
create or replace function public.reactor_release(p_table text, p_leases jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'pending', attempts = greatest(j.attempts - 1, 0), started_at = null,
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'lease') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_leases into done;
  return jsonb_build_object('released', to_jsonb(done), 'stale', reactor.stale_ids(p_leases, done));
end
$$;

-- Write a running job's progress (0-100) and a short message. False when the lease is stale.
create or replace function public.reactor_progress(
  p_table text, p_id bigint, p_lease_token uuid, p_progress integer, p_message text default null
) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  hit boolean;
begin
  perform reactor.check_range('p_progress', p_progress, 0, 100);
  if p_lease_token is null then
    raise exception 'p_lease_token is missing';
  end if;
  execute format($q$
    update public.%1$I set progress = $1, progress_message = left($2, 1000), updated_at = now()
    where id = $3 and lease_token = $4 and status = 'processing'
  $q$, t) using p_progress, p_message, p_id, p_lease_token;
  get diagnostics hit = row_count;
  return hit;
end
$$;

-- Reclaim jobs whose lease expired: back to pending after a backoff, or `failed` when their
-- attempts are spent. The attempt was counted at claim, so a job that kills every worker ends
-- in `failed` after max_attempts. Rows another reaper holds are skipped, so concurrent reapers
-- never handle a job twice. Returns {"requeued": [ids], "failed": [ids]}.
create or replace function public.reactor_reap(p_table text, p_limit integer default 1000) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  requeued bigint[];
  dead bigint[];
begin
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  execute format($q$
    with expired as (
      select j.id from public.%1$I j
      where j.status = 'processing' and j.lease_expires_at < now()
      order by j.lease_expires_at
      limit $1
      for update skip locked
    ), hit as (
      update public.%1$I j
      set status = case when j.attempts >= j.max_attempts then 'failed' else 'pending' end,
          run_at = case when j.attempts >= j.max_attempts then j.run_at
                        else now() + reactor.backoff(j.attempts) end,
          completed_at = case when j.attempts >= j.max_attempts then now() end,
          last_error = format('lease expired: worker %%s stopped reporting during attempt %%s of %%s%%s',
                              j.locked_by, j.attempts, j.max_attempts,
                              case when j.attempts >= j.max_attempts then '; attempts exhausted' else '' end),
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from expired e
      where j.id = e.id
      returning j.id, j.status
    ) select coalesce(array_agg(id order by id) filter (where status = 'pending'), '{}'),
             coalesce(array_agg(id order by id) filter (where status = 'failed'), '{}')
      from hit
  $q$, t) using p_limit into requeued, dead;
  return jsonb_build_object('requeued', to_jsonb(requeued), 'failed', to_jsonb(dead));
end
$$;

-- Queue health for one table: counts by status, due and scheduled pending jobs, how long the
-- oldest due job has waited, pending jobs by type, and leases already expired.
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
                 from public.%1$I),
      'due', (select count(*) from public.%1$I where status = 'pending' and run_at <= now()),
      'scheduled', (select count(*) from public.%1$I where status = 'pending' and run_at > now()),
      'oldest_due_age_seconds', (select round(extract(epoch from now() - min(run_at))::numeric, 3)
                                 from public.%1$I where status = 'pending' and run_at <= now()),
      'pending_by_type', (select coalesce(jsonb_object_agg(job_type, n), '{}')
                          from (select job_type, count(*) n from public.%1$I
                                where status = 'pending' group by job_type) s),
      'expired_leases', (select count(*) from public.%1$I
                         where status = 'processing' and lease_expires_at < now())
    )
  $q$, t) using t into stats;
  return stats;
end
$$;

-- Put failed jobs back to pending with fresh attempts: the ones in p_ids, or else every failed
-- job (of p_job_type, when given), at most p_limit. Returns {"retried": [ids]}.
create or replace function public.reactor_retry(
  p_table text, p_ids bigint[] default null, p_job_type text default null, p_limit integer default 1000
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_range('number of ids', cardinality(coalesce(p_ids, '{}')), 0, reactor.max_batch());
  execute format($q$
    with picked as (
      select j.id from public.%1$I j
      where j.status = 'failed' and ($1::bigint[] is null or j.id = any($1))
        and ($2::text is null or j.job_type = $2)
      order by j.id limit $3 for update skip locked
    ), hit as (
      update public.%1$I j
      set status = 'pending', attempts = 0, run_at = now(), completed_at = null, result = null,
          progress = null, progress_message = null, updated_at = now()
      from picked where j.id = picked.id
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_ids, p_job_type, p_limit into done;
  return jsonb_build_object('retried', to_jsonb(done));
end
$$;

-- Cancel pending jobs. Running and finished jobs are left alone and listed as not cancelled.
-- Returns {"cancelled": [ids], "not_cancelled": [ids]}.
create or replace function public.reactor_cancel(p_table text, p_ids bigint[]) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  if p_ids is null or array_position(p_ids, null) is not null then
    raise exception 'p_ids must list the jobs to cancel';
  end if;
  perform reactor.check_range('number of ids', cardinality(p_ids), 1, reactor.max_batch());
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'cancelled', completed_at = now(), updated_at = now()
      where j.id = any($1) and j.status = 'pending'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_ids into done;
  return jsonb_build_object('cancelled', to_jsonb(done),
    'not_cancelled', to_jsonb(array(select distinct x from unnest(p_ids) x where not x = any(done) order by x)));
end
$$;

-- Delete finished jobs (completed, failed, cancelled) that finished more than
-- p_older_than_seconds ago, at most p_limit per call. Returns {"pruned": n}.
create or replace function public.reactor_prune(
  p_table text, p_older_than_seconds integer, p_limit integer default 10000
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  n bigint;
begin
  perform reactor.check_range('p_older_than_seconds', p_older_than_seconds, 0, 2147483647);
  perform reactor.check_range('p_limit', p_limit, 1, 100000);
  execute format($q$
    with old as (
      select j.id from public.%1$I j
      where j.status in ('completed', 'failed', 'cancelled')
        and j.completed_at < now() - make_interval(secs => $1)
      order by j.completed_at limit $2 for update skip locked
    ) delete from public.%1$I j using old where j.id = old.id
  $q$, t) using p_older_than_seconds, p_limit;
  get diagnostics n = row_count;
  return jsonb_build_object('pruned', n);
end
$$;

-- Only the service role runs the worker's functions; Supabase's default privileges would
-- otherwise hand them to anon and authenticated.
do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.proname like 'reactor\_%'
  loop
    execute format('revoke all on function %s from public, anon, authenticated', fn);
    execute format('grant execute on function %s to service_role', fn);
  end loop;
end
$$;
revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0003_worker_functions') on conflict do nothing;
