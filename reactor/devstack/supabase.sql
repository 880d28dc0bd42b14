-- What a Supabase project's database has before any user migration runs, as far as reactor and a
-- typical frontend depend on it: the API roles, the `auth` helpers that read PostgREST's JWT claims,
-- a minimal `auth.users`, the default privileges Supabase grants in `public`, and the
-- `supabase_realtime` publication. Safe to run again; roles are cluster-wide, so they are created
-- only when missing.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key,
  email text unique,
  role text not null default 'authenticated',
  created_at timestamptz not null default now()
);
grant select on auth.users to service_role;

-- The claim helpers exactly as Supabase defines them: the legacy per-claim GUC first, then the
-- JSON claims that PostgREST sets for every request.
create or replace function auth.uid() returns uuid
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- Supabase grants everything in `public` to the API roles by default and relies on RLS and
-- explicit revokes; migrations must cope with that, so the local database does the same.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

-- A Supabase database tells PostgREST to reload its schema cache after DDL: event triggers send
-- NOTIFY pgrst when a command creates or alters what the API serves, or drops anything. The
-- reload still happens after the commit, so a call right after a migration can miss it; the
-- hosted profile's REST keeps its cache until such a NOTIFY (docs/hosted-supabase.md).
create schema if not exists extensions;

create or replace function extensions.reactor_devstack_ddl_notify() returns event_trigger
language plpgsql as $$
begin
  if exists (
    select 1 from pg_event_trigger_ddl_commands() c
    where c.schema_name is distinct from 'pg_temp'
      and c.command_tag in (
        'CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
        'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE VIEW', 'ALTER VIEW',
        'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW', 'CREATE FUNCTION', 'ALTER FUNCTION',
        'CREATE TRIGGER', 'CREATE TYPE', 'ALTER TYPE', 'CREATE RULE', 'COMMENT')
  ) then
    notify pgrst, 'reload schema';
  end if;
end
$$;

create or replace function extensions.reactor_devstack_drop_notify() returns event_trigger
language plpgsql as $$
begin
  if exists (select 1 from pg_event_trigger_dropped_objects() d where d.schema_name is distinct from 'pg_temp') then
    notify pgrst, 'reload schema';
  end if;
end
$$;

do $$
begin
  if not exists (select 1 from pg_event_trigger where evtname = 'reactor_devstack_ddl_watch') then
    create event trigger reactor_devstack_ddl_watch on ddl_command_end
      execute procedure extensions.reactor_devstack_ddl_notify();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'reactor_devstack_drop_watch') then
    create event trigger reactor_devstack_drop_watch on sql_drop
      execute procedure extensions.reactor_devstack_drop_notify();
  end if;
end
$$;
