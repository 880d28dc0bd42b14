-- reactor 0022: the rows that name a worker reach it by Broadcast from Database, on a private
-- topic of its own, instead of as postgres_changes. On hosted Supabase postgres_changes are polled
-- (every 100 ms while busy, 500 ms idle, one poller for the whole project, silently dropped past
-- the message quota), while a broadcast that `realtime.send` writes in the inserting transaction is
-- streamed to the topic's subscribers once it commits, can be replayed to a worker that rejoins,
-- and needs no public channel, so projects that allow private channels only work too. A job still
-- costs one message: the worker the row names, and nobody else, hears it.

-- A secret the topics are derived from. No API role can read it, so nobody can work a worker's
-- topic out from its id, even where the project's own policies on realtime.messages let signed-in
-- users join any private channel.
create table if not exists reactor.topic_key (
  only_row boolean primary key default true check (only_row),
  key uuid not null default gen_random_uuid()
);
insert into reactor.topic_key default values on conflict do nothing;
revoke all on reactor.topic_key from public;

-- The private Realtime topic of worker p_worker.
create or replace function reactor.worker_topic(p_worker text) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select 'reactor:' || left(encode(sha256(convert_to(k.key::text || ':' || p_worker, 'UTF8')), 'hex'), 32)
  from reactor.topic_key k
$$;

-- The largest payload an announcement carries, as JSON text. A hand-off whose payload is larger
-- is announced without it, and the worker claims the job whole; Realtime's limit on a broadcast's
-- size is far above this.
create or replace function reactor.max_announced_payload_bytes() returns integer
language sql immutable as 'select 65536';

-- After an insert that names a worker in `locked_by` (a hand-off, a herald's pending job, a probe
-- or a cancel signal), broadcast the row as event `job` to that worker's topic, in the inserting
-- transaction: a rollback sends nothing. A pending row goes without its payload, which the herald
-- does not need. It runs as its owner, since realtime.send writes to realtime.messages under RLS
-- and the inserting user may write nothing there; where Realtime's schema is missing (a plain
-- Postgres), nothing is sent.
create or replace function reactor.announce() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  record jsonb := to_jsonb(new);
begin
  if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
    return null;
  end if;
  if new.status = 'pending' or pg_column_size(new.payload) > reactor.max_announced_payload_bytes()
     or octet_length(new.payload::text) > reactor.max_announced_payload_bytes() then
    record := record - 'payload';
  end if;
  perform realtime.send(jsonb_build_object('table', tg_table_name, 'record', record), 'job',
                        reactor.worker_topic(new.locked_by), true);
  return null;
end
$$;

create or replace function reactor.create_announce_trigger(p_name text) returns void
language plpgsql as $$
begin
  execute format(
    'create or replace trigger zz_reactor_announce after insert on public.%I for each row '
    'when (new.locked_by is not null) execute function reactor.announce()', p_name);
end
$$;

-- Registering a table in reactor.job_tables (create_job_table does) makes its claim function, its
-- hand-off trigger and its announcements.
create or replace function reactor.job_table_registered() returns trigger
language plpgsql as $$
begin
  perform reactor.create_claim_function(new.name);
  perform reactor.create_hand_off_trigger(new.name);
  perform reactor.create_announce_trigger(new.name);
  return null;
end
$$;

select reactor.create_announce_trigger(name) from reactor.job_tables;

-- The topic a worker subscribes to, for the worker itself; it names what is missing on a
-- database without Realtime's schema.
create or replace function public.reactor_worker_topic(p_worker text) returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform reactor.check_worker(p_worker);
  if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
    raise exception 'this database has no realtime.send(), so it cannot announce jobs over Realtime'
      using hint = 'reactor needs Supabase Realtime (Broadcast from Database); run the worker with REACTOR_REALTIME=off to poll instead.';
  end if;
  return reactor.worker_topic(p_worker);
end
$$;
revoke all on function public.reactor_worker_topic(text) from public, anon, authenticated;
grant execute on function public.reactor_worker_topic(text) to service_role;
revoke all on function reactor.worker_topic(text), reactor.announce(), reactor.create_announce_trigger(text),
  reactor.max_announced_payload_bytes() from public;

insert into reactor.schema_migrations (version) values ('0022_announce_by_broadcast') on conflict do nothing;
