-- reactor 0013: cancelling a running job stops its handler within a second; a handler can snooze.
--
-- reactor_cancel (operators) and reactor_cancel_own (a signed-in user, their own job) now cancel
-- processing jobs too, not only pending ones. The row is `cancelled` at once, its lease token
-- cleared, so nothing the worker still reports can overwrite it; and a signal row (a probe row,
-- `cancelled`, naming that worker in `locked_by`, with the job's id in its payload) reaches the
-- worker over Realtime in the same commit, which cancels the handler's scope: the handler's
-- `finally` blocks and context managers run, and its outcome is never reported. Without Realtime
-- the worker finds out at its next heartbeat (every lease/3), when the lease turns out stale.

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
    with was as (
      select j.id, j.status, j.locked_by from public.%1$I j
      where j.id = any($1) and j.status in ('pending', 'processing')
      for update
    ), hit as (
      update public.%1$I j
      set status = 'cancelled', completed_at = now(), updated_at = now(),
          lease_token = null, lease_expires_at = null
      from was where j.id = was.id
      returning j.id, was.status, was.locked_by
    ), signals as (
      insert into public.%1$I (job_type, status, payload, locked_by)
      select reactor.probe_job_type(), 'cancelled',
             jsonb_build_object('worker', h.locked_by, 'cancel', h.id), h.locked_by
      from hit h where h.status = 'processing' and h.locked_by is not null
    )
    select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_ids into done;
  return jsonb_build_object('cancelled', to_jsonb(done),
    'not_cancelled', to_jsonb(array(select distinct x from unnest(p_ids) x where not x = any(done) order by x)));
end
$$;

create or replace function public.reactor_cancel_own(p_table text, p_id bigint) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  owner uuid := auth.uid();
  state text;
begin
  if owner is null then
    raise exception 'only a signed-in user can cancel their jobs' using errcode = '42501';
  end if;
  execute format($q$
    with was as (
      select j.id, j.status, j.locked_by from public.%1$I j
      where j.id = $1 and user_id = $2 and j.status in ('pending', 'processing')
      for update
    ), hit as (
      update public.%1$I j
      set status = 'cancelled', completed_at = now(), updated_at = now(),
          lease_token = null, lease_expires_at = null
      from was where j.id = was.id
      returning j.status, was.status as was_status, was.locked_by
    ), signals as (
      insert into public.%1$I (job_type, status, payload, locked_by)
      select reactor.probe_job_type(), 'cancelled',
             jsonb_build_object('worker', h.locked_by, 'cancel', $1), h.locked_by
      from hit h where h.was_status = 'processing' and h.locked_by is not null
    )
    select status from hit
  $q$, t) using p_id, owner into state;
  if state is null then
    execute format('select status from public.%I where id = $1 and user_id = $2', t)
      using p_id, owner into state;
  end if;
  if state is null then
    raise exception 'job % not found in %', p_id, t using errcode = 'PT404';
  end if;
  return jsonb_build_object('id', p_id, 'cancelled', state = 'cancelled', 'status', state);
end
$$;

-- Put jobs back to `pending` until their retry_at (now when absent) without spending the attempt
-- they ran under: a handler that has to wait for something (Snooze) does not use up its retries.
-- Items as reactor_fail takes them ({id, lease_token, error, retry_at}; the error says why, for the
-- worker's log, and is not stored: the job did not fail); only the lease's holder can.
-- Returns {"snoozed": [ids], "stale": [ids]}.
create or replace function public.reactor_snooze(p_table text, p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
begin
  execute format($q$
    with hit as (
      update public.%1$I j
      set status = 'pending', attempts = greatest(j.attempts - 1, 0),
          run_at = least(greatest(coalesce(i.retry_at, now()), now()), '2199-12-31 00:00:00+00'),
          locked_by = null, lease_token = null, lease_expires_at = null, updated_at = now()
      from reactor.batch_items($1, 'fail') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_jobs into done;
  return jsonb_build_object('snoozed', to_jsonb(done), 'stale', reactor.stale_ids(p_jobs, done));
end
$$;

revoke all on function public.reactor_snooze(text, jsonb) from public, anon, authenticated;
grant execute on function public.reactor_snooze(text, jsonb) to service_role;

insert into reactor.schema_migrations (version) values ('0013_cancel_and_snooze') on conflict do nothing;
