-- reactor 0009: a claim no row cap can cut.
--
-- PostgREST's Max rows (db-max-rows: 1,000 on hosted Supabase unless the project lowers it) cuts
-- the rows of a set-returning function after the function ran. reactor_claim's jobs beyond the
-- cap would stay leased but never reach the worker, until the reaper requeued them with an
-- attempt spent (docs/hosted-supabase.md, "Max rows"). reactor_claim_batch makes the same claim
-- and returns it as one jsonb array, in claim order, which no cap cuts; the worker calls it.
-- reactor_claim stays, for callers that read rows.

create or replace function public.reactor_claim_batch(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns jsonb
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', c.id, 'job_type', c.job_type, 'payload', c.payload, 'priority', c.priority,
           'attempt', c.attempt, 'max_attempts', c.max_attempts, 'lease_token', c.lease_token,
           'run_at', c.run_at, 'created_at', c.created_at, 'user_id', c.user_id
         ) order by c.ordinality), '[]')
  from public.reactor_claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, p_standby_seconds)
       with ordinality as c
$$;

revoke all on function public.reactor_claim_batch(text, text, text[], integer, integer, integer)
  from public, anon, authenticated;
grant execute on function public.reactor_claim_batch(text, text, text[], integer, integer, integer)
  to service_role;

insert into reactor.schema_migrations (version) values ('0009_claim_batch') on conflict do nothing;
