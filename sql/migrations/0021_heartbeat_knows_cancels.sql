-- reactor 0021: a heartbeat says which of its stale leases belong to cancelled jobs, so a worker
-- whose heartbeat (or a hand-off's confirmation) learns of a cancel before Realtime's signal
-- arrives stops the handler as cancelled, not as taken over by another worker. The answer gains
-- "cancelled" only when there are such jobs; a heartbeat with no stale lease pays nothing.

create or replace function public.reactor_heartbeat(
  p_table text, p_leases jsonb, p_lease_seconds integer default 60
) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  done bigint[];
  stale jsonb;
  cancelled jsonb;
begin
  perform reactor.check_lease_seconds(p_lease_seconds);
  execute format($q$
    with hit as (
      update public.%1$I j
      set lease_expires_at = now() + make_interval(secs => $1), updated_at = now(),
          started_at = coalesce(j.started_at, now())
      from reactor.batch_items($2, 'lease') i
      where j.id = i.id and j.lease_token = i.lease_token and j.status = 'processing'
      returning j.id
    ) select coalesce(array_agg(id order by id), '{}') from hit
  $q$, t) using p_lease_seconds, p_leases into done;
  stale := reactor.stale_ids(p_leases, done);
  if stale <> '[]' then
    -- Which of them were cancelled: the worker stops those as cancelled, not as taken over.
    execute format($q$
      select jsonb_agg(j.id order by j.id) from public.%I j
      where j.id in (select x::bigint from jsonb_array_elements_text($1) x) and j.status = 'cancelled'
    $q$, t) using stale into cancelled;
  end if;
  return jsonb_build_object('extended', to_jsonb(done), 'stale', stale)
         || case when cancelled is not null then jsonb_build_object('cancelled', cancelled) else '{}' end;
end
$$;

insert into reactor.schema_migrations (version) values ('0021_heartbeat_knows_cancels') on conflict do nothing;
