-- reactor 0002: the job table and the one call that creates one.
--
-- A job table lives in `public` so a frontend can insert through PostgREST under RLS, and is in
-- the `supabase_realtime` publication so workers hear inserts. `select reactor.create_job_table('x')`
-- makes another with the same shape; calling it again changes nothing.

create or replace function reactor.create_job_table(p_name text) returns text
language plpgsql as $$
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_]{0,47}$' then
    raise exception 'invalid job table name "%"', left(coalesce(p_name, '<null>'), 100)
      using hint = 'Use 1 to 48 lowercase letters, digits and underscores, starting with a letter.';
  end if;
  if to_regclass(format('public.%I', p_name)) is not null
     and not exists (select 1 from reactor.job_tables where name = p_name) then
    raise exception 'table public.% already exists and is not a reactor job table', p_name;
  end if;

  execute format($ddl$
    create table if not exists public.%1$I (
      id bigint generated always as identity primary key,
      job_type text not null check (job_type <> '' and length(job_type) <= 200),
      payload jsonb not null default '{}'::jsonb,
      priority integer not null default 0,
      run_at timestamptz not null default now(),
      max_attempts integer not null default 5 check (max_attempts between 1 and 1000),
      user_id uuid default auth.uid(),
      status text not null default 'pending'
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
      attempts integer not null default 0,
      result jsonb,
      last_error text,
      progress smallint check (progress between 0 and 100),
      progress_message text,
      locked_by text,
      lease_expires_at timestamptz,
      lease_token uuid,
      created_at timestamptz not null default now(),
      started_at timestamptz,
      completed_at timestamptz,
      updated_at timestamptz not null default now()
    )$ddl$, p_name);

  -- Claiming reads only pending rows in claim order, so millions of finished rows cost nothing.
  execute format('create index if not exists %I on public.%I (priority desc, run_at, id) where status = ''pending''',
    p_name || '_claim_idx', p_name);
  execute format('create index if not exists %I on public.%I (lease_expires_at) where status = ''processing''',
    p_name || '_lease_idx', p_name);
  execute format('create index if not exists %I on public.%I (completed_at) where status in (''completed'', ''failed'', ''cancelled'')',
    p_name || '_finished_idx', p_name);
  execute format('create index if not exists %I on public.%I (user_id)', p_name || '_user_idx', p_name);

  -- Supabase grants every API role everything in `public` by default; take it back, then give
  -- `authenticated` exactly: insert its own rows (user-writable columns only) and read them.
  execute format('revoke all on public.%I from public, anon, authenticated', p_name);
  execute format('grant select on public.%I to authenticated', p_name);
  execute format('grant insert (job_type, payload, priority, run_at, max_attempts, user_id) on public.%I to authenticated', p_name);
  execute format('grant all on public.%I to service_role', p_name);

  execute format('alter table public.%I enable row level security', p_name);
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = p_name and policyname = 'reactor_owner_reads') then
    execute format('create policy reactor_owner_reads on public.%I for select to authenticated using (user_id = auth.uid())', p_name);
  end if;
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = p_name and policyname = 'reactor_owner_inserts') then
    execute format('create policy reactor_owner_inserts on public.%I for insert to authenticated with check (user_id = auth.uid())', p_name);
  end if;

  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = p_name) then
    execute format('alter publication supabase_realtime add table public.%I', p_name);
  end if;

  insert into reactor.job_tables (name) values (p_name) on conflict do nothing;
  return p_name;
end
$$;

revoke all on function reactor.create_job_table(text) from public;

select reactor.create_job_table('jobs');

insert into reactor.schema_migrations (version) values ('0002_job_tables') on conflict do nothing;
