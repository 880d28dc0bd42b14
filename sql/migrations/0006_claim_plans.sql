-- reactor 0006: a claim's query is planned once per database session, not on every call.
--
-- reactor_claim builds its query with format() for the table it is given, and plpgsql parses and
-- plans a query built that way on every call. For a one-job claim, the claim that follows a
-- Realtime event, that planning was about a third of the call's time in Postgres on the benchmark
-- machine (docs/benchmarks.md). Each registered job table now gets its own claim function,
-- reactor.claim_<table>, made from one template when the table is registered; its query is
-- static SQL, which plpgsql plans once per session and then reuses. reactor_claim checks its
-- arguments as before and calls it. What a claim does and returns is unchanged.

create or replace function reactor.create_claim_function(p_name text) returns void
language plpgsql as $$
begin
  execute format($ddl$
    create or replace function reactor.%1$I(
      p_worker text, p_job_types text[], p_limit integer, p_lease_seconds integer
    ) returns table (
      id bigint, job_type text, payload jsonb, priority integer, attempt integer,
      max_attempts integer, lease_token uuid, lease_expires_at timestamptz, run_at timestamptz,
      created_at timestamptz, started_at timestamptz, user_id uuid
    )
    language plpgsql volatile set search_path = pg_catalog, pg_temp as $body$
    begin
      return query
        with picked as (
          select j.id from public.%2$I j
          where j.status = 'pending' and j.run_at <= now() and j.job_type = any(p_job_types)
          order by j.priority desc, j.run_at, j.id
          limit p_limit
          for update skip locked
        ), claimed as (
          update public.%2$I j
          set status = 'processing', attempts = j.attempts + 1, locked_by = p_worker,
              lease_expires_at = now() + make_interval(secs => p_lease_seconds),
              lease_token = gen_random_uuid(), started_at = now(), updated_at = now()
          from picked where j.id = picked.id
          returning j.*
        )
        select c.id, c.job_type, c.payload, c.priority, c.attempts, c.max_attempts, c.lease_token,
               c.lease_expires_at, c.run_at, c.created_at, c.started_at, c.user_id
        from claimed c order by c.priority desc, c.run_at, c.id;
    end
    $body$
  $ddl$, 'claim_' || p_name, p_name);
  execute format('revoke all on function reactor.%I(text, text[], integer, integer) from public',
    'claim_' || p_name);
end
$$;

-- reactor.create_job_table() registers every table it makes here; registering one makes its
-- claim function.
create or replace function reactor.job_table_registered() returns trigger
language plpgsql as $$
begin
  perform reactor.create_claim_function(new.name);
  return null;
end
$$;

drop trigger if exists job_table_registered on reactor.job_tables;
create trigger job_table_registered after insert on reactor.job_tables
  for each row execute function reactor.job_table_registered();

select reactor.create_claim_function(name) from reactor.job_tables;

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
  -- Local to the transaction, so it holds at the commit that follows this call (0005).
  perform set_config('synchronous_commit', 'off', true);
  perform reactor.check_worker(p_worker);
  perform reactor.check_range('p_limit', p_limit, 1, reactor.max_batch());
  perform reactor.check_lease_seconds(p_lease_seconds);
  perform reactor.check_job_types(p_job_types);
  return query execute format('select * from reactor.%I($1, $2, $3, $4)', 'claim_' || t)
    using p_worker, p_job_types, p_limit, p_lease_seconds;
end
$$;

revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0006_claim_plans') on conflict do nothing;
