-- reactor 0017: webhooks on a job's outcome, from the database. Where the project has pg_net,
-- reactor.add_webhook() makes every job of a table (or of one type) that finishes, completed,
-- failed for good or cancelled, queue an HTTP POST of its outcome in the same transaction as the
-- outcome: a rolled-back outcome posts nothing, and no worker has to be alive. pg_net sends it
-- after the commit, once, with no retry; its answer is in net._http_response for a few hours.
-- A table with no webhook has no trigger and pays nothing.

create table if not exists reactor.webhooks (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_.:-]{0,99}$'),
  job_table text not null references reactor.job_tables (name),
  job_type text,  -- null: every type
  url text not null check (url ~ '^https?://'),
  headers jsonb not null default '{}' check (jsonb_typeof(headers) = 'object'),
  timeout_ms integer not null default 5000 check (timeout_ms between 100 and 60000),
  created_at timestamptz not null default now()
);
revoke all on reactor.webhooks from public;

-- Queue one POST per webhook of the job's table and type, with the job's outcome as its body:
-- {table, id, job_type, status, attempts, result, last_error, user_id, completed_at}.
create or replace function reactor.post_outcome() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  hook reactor.webhooks;
begin
  for hook in
    select * from reactor.webhooks w
    where w.job_table = tg_table_name and (w.job_type is null or w.job_type = new.job_type)
    order by w.name
  loop
    perform net.http_post(
      url => hook.url,
      body => jsonb_build_object(
        'table', tg_table_name, 'id', new.id, 'job_type', new.job_type, 'status', new.status,
        'attempts', new.attempts, 'result', new.result, 'last_error', new.last_error,
        'user_id', new.user_id, 'completed_at', new.completed_at),
      headers => hook.headers || '{"Content-Type": "application/json"}',
      timeout_milliseconds => hook.timeout_ms);
  end loop;
  return null;
end
$$;

-- Post the outcome of every job of p_table (of p_job_type, when given) that finishes to p_url,
-- with p_headers (for example an Authorization header; stored where only the service role and
-- the SQL editor read it). Run it again to change a webhook. Returns the webhook's row.
create or replace function reactor.add_webhook(
  p_name text, p_table text, p_url text, p_job_type text default null,
  p_headers jsonb default '{}', p_timeout_ms integer default 5000
) returns reactor.webhooks
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  hook reactor.webhooks;
begin
  if to_regproc('net.http_post') is null then
    raise exception 'webhook %: reactor.add_webhook needs the pg_net extension', p_name
      using hint = 'Enable it (Supabase: Database, Extensions, pg_net).';
  end if;
  insert into reactor.webhooks (name, job_table, job_type, url, headers, timeout_ms)
  values (p_name, t, p_job_type, p_url, coalesce(p_headers, '{}'), p_timeout_ms)
  on conflict (name) do update set job_table = excluded.job_table, job_type = excluded.job_type,
    url = excluded.url, headers = excluded.headers, timeout_ms = excluded.timeout_ms
  returning * into hook;
  execute format($q$
    create or replace trigger reactor_post_outcome after update of status on public.%I for each row
    when (new.status in ('completed', 'failed', 'cancelled') and old.status in ('pending', 'processing', 'waiting'))
    execute function reactor.post_outcome()$q$, t);
  return hook;
end
$$;

-- Delete a webhook; a table left with none loses its trigger. Returns whether it existed.
create or replace function reactor.remove_webhook(p_name text) returns boolean
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  t text;
begin
  delete from reactor.webhooks where name = p_name returning job_table into t;
  if t is null then
    return false;
  end if;
  if not exists (select 1 from reactor.webhooks where job_table = t) then
    execute format('drop trigger if exists reactor_post_outcome on public.%I', t);
  end if;
  return true;
end
$$;

revoke all on all functions in schema reactor from public;

insert into reactor.schema_migrations (version) values ('0017_finish_webhooks') on conflict do nothing;
