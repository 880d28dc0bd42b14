-- What a Supabase project's database has before any user migration runs, as far as reactor and a
-- typical frontend depend on it: the API roles, the `auth` helpers that read PostgREST's JWT claims,
-- a minimal `auth.users` with the sessions and refresh tokens of the local /auth/v1, the default
-- privileges Supabase grants in `public`, and the `supabase_realtime` publication. Safe to run
-- again; roles are cluster-wide, so they are created only when missing.

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
-- The columns the local /auth/v1 reads and writes (reactor/devstack/auth/), added to a table
-- created before it, with GoTrue's names; its sessions and rotating refresh tokens likewise.
alter table auth.users
  add column if not exists aud text not null default 'authenticated',
  add column if not exists encrypted_password text,
  add column if not exists email_confirmed_at timestamptz,
  add column if not exists last_sign_in_at timestamptz,
  add column if not exists raw_app_meta_data jsonb not null default '{}',
  add column if not exists raw_user_meta_data jsonb not null default '{}',
  add column if not exists updated_at timestamptz not null default now(),
  add column if not exists is_anonymous boolean not null default false;
grant select on auth.users to service_role;

create table if not exists auth.sessions (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists auth.refresh_tokens (
  id bigserial primary key,
  token text not null unique,
  user_id uuid not null,
  parent text,
  session_id uuid not null references auth.sessions (id) on delete cascade,
  revoked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists refresh_tokens_session_id_idx on auth.refresh_tokens (session_id);

-- Passwords: bcrypt through pgcrypto's crypt() and gen_salt('bf'), as GoTrue stores them, where
-- the server has pgcrypto; the embedded server has no pgcrypto, so there a salted SHA-256 (the
-- local stack is for development only). Only the stack's own superuser connection calls these.
create schema if not exists extensions;

do $$
declare
  crypto text := (select extnamespace::regnamespace::text from pg_extension where extname = 'pgcrypto');
begin
  if crypto is null and exists (select 1 from pg_available_extensions where name = 'pgcrypto') then
    create extension pgcrypto with schema extensions;
    crypto := 'extensions';
  end if;
  if crypto is not null then
    execute format($f$
      create or replace function extensions.reactor_devstack_hash_password(password text) returns text
      language sql volatile as $b$ select %1$s.crypt(password, %1$s.gen_salt('bf')) $b$;
      create or replace function extensions.reactor_devstack_password_matches(password text, hash text)
      returns boolean language sql stable as $b$
        select case when hash like '$2_$%%' then %1$s.crypt(password, hash) = hash else false end
      $b$;
    $f$, crypto);
  else
    create or replace function extensions.reactor_devstack_hash_password(password text) returns text
    language sql volatile as $b$
      select 'sha256$' || salt || '$' || encode(sha256(convert_to(salt || password, 'UTF8')), 'hex')
      from (select md5(random()::text || clock_timestamp()::text) as salt) s
    $b$;
    create or replace function extensions.reactor_devstack_password_matches(password text, hash text)
    returns boolean language sql stable as $b$
      select coalesce(split_part(hash, '$', 1) = 'sha256' and split_part(hash, '$', 3) =
        encode(sha256(convert_to(split_part(hash, '$', 2) || password, 'UTF8')), 'hex'), false)
    $b$;
  end if;
end
$$;
revoke execute on function extensions.reactor_devstack_hash_password(text),
  extensions.reactor_devstack_password_matches(text, text) from public;

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
