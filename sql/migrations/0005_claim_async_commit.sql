-- reactor 0005: a claim does not wait for its WAL flush.
--
-- A claim's commit used to wait for the disk like every other commit: about half of a one-job
-- claim's time in Postgres on the benchmark machine, and the largest single step between an
-- insert and its handler. Losing a claim costs nothing that at-least-once delivery does not
-- already allow: if the server crashes in the fraction of a second before the claim reaches the
-- disk, the job is back to `pending` with its attempts unspent, the worker's outcome for it is
-- refused as stale (its lease token is gone), and the job runs again. Completes, fails,
-- heartbeats and everything else still commit synchronously (unless the server says otherwise),
-- and any of them flushes the claims before it. The body is 0003's, plus the first statement.

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
  -- Local to the transaction, so it holds at the commit that follows this call.
  perform set_config('synchronous_commit', 'off', true);
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

insert into reactor.schema_migrations (version) values ('0005_claim_async_commit') on conflict do nothing;
