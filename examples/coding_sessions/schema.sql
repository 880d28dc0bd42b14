-- examples/coding_sessions: a coding session per job, prioritised by the owner's plan, and
-- marked failed when its job dies.

create table if not exists public.example_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  plan text not null check (plan in ('pro', 'starter', 'free')),
  status text not null default 'queued' check (status in ('queued', 'running', 'done', 'failed')),
  error text,
  updated_at timestamptz not null default now()
);
revoke all on public.example_sessions from public, anon, authenticated;
grant all on public.example_sessions to service_role;

-- Priority by plan, set as the job is inserted, whoever inserts it: Pro 10, Starter 5, Free 0.
-- Only a session the job's owner holds counts: naming someone else's Pro session buys nothing.
create or replace function public.example_session_priority() returns trigger
language plpgsql security definer set search_path = pg_catalog, public as $$
begin
  if new.job_type = 'coding_session' then
    new.priority := case (select plan from public.example_sessions
                          where id::text = new.payload->>'session_id' and user_id = new.user_id)
                      when 'pro' then 10 when 'starter' then 5 else 0 end;
  end if;
  return new;
end
$$;
drop trigger if exists example_session_priority on public.jobs;
create trigger example_session_priority before insert on public.jobs
  for each row execute function public.example_session_priority();

-- A job that dies (retries spent, a permanent error, or reaped after its last attempt) fails its
-- session, when the session is its owner's. A trigger sees every way a job can end up failed; a handler sees only its own.
create or replace function public.example_session_failed() returns trigger
language plpgsql security definer set search_path = pg_catalog, public as $$
begin
  update public.example_sessions set status = 'failed', error = new.last_error, updated_at = now()
  where id::text = new.payload->>'session_id' and user_id = new.user_id;
  return new;
end
$$;
drop trigger if exists example_session_failed on public.jobs;
create trigger example_session_failed after update of status on public.jobs
  for each row when (new.job_type = 'coding_session' and new.status = 'failed' and old.status <> 'failed')
  execute function public.example_session_failed();

revoke all on function public.example_session_priority(), public.example_session_failed() from public, anon, authenticated;

-- Signed-in users may insert coding sessions; the priority trigger sets priority up to 10.
select reactor.allow_insert('jobs', 'coding_session', p_max_priority => 10, p_max_attempts => 3, p_max_pending => 10);
