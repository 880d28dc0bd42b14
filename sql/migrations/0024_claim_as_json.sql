-- reactor 0024: the claim's answer as json. reactor_claim_batch builds its one array with
-- jsonb_agg(jsonb_build_object(...)): 12 to 14 ms of a claim of 1,000 jobs on the benchmark
-- machine, more than half of the claim; built as json the same text takes 5 ms. Workers of this
-- version call reactor_claim_jobs.

-- The worker's claim: reactor_claim_batch's array built as json rather than jsonb, which cost more
-- than the claim itself (docs/benchmarks.md, "Where a no-op job's CPU went"). A function's return
-- type cannot change in place, hence the new name; reactor_claim_batch stays for workers of
-- earlier versions during a rolling upgrade.
create or replace function public.reactor_claim_jobs(
  p_table text, p_worker text, p_job_types text[], p_limit integer default 1,
  p_lease_seconds integer default 60, p_standby_seconds integer default 0
) returns json
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(json_agg(json_build_object(
           'id', c.id, 'job_type', c.job_type, 'payload', c.payload, 'priority', c.priority,
           'attempt', c.attempt, 'max_attempts', c.max_attempts, 'lease_token', c.lease_token,
           'run_at', c.run_at, 'created_at', c.created_at, 'user_id', c.user_id,
           'resumed', c.resumed, 'parent_id', c.parent_id
         ) order by c.ordinality), '[]')
  from reactor.claim(p_table, p_worker, p_job_types, p_limit, p_lease_seconds, p_standby_seconds)
       with ordinality as c
$$;

revoke all on function public.reactor_claim_jobs(text, text, text[], integer, integer, integer)
  from public, anon, authenticated;
grant execute on function public.reactor_claim_jobs(text, text, text[], integer, integer, integer)
  to service_role;

insert into reactor.schema_migrations (version) values ('0024_claim_as_json') on conflict do nothing;
