-- Realtime's own objects in a Supabase database, as Supabase Realtime's tenant migrations leave
-- them: `realtime.messages` (what Realtime Authorization's RLS policies are written on, and where
-- Broadcast from Database writes), `realtime.topic()`, `realtime.send()` and
-- `realtime.broadcast_changes()`. Supabase partitions realtime.messages by day and reads its
-- inserts from a logical replication slot; the local Postgres cannot decode WAL, so here it is one
-- table and a trigger sends each inserted broadcast with pg_notify, which reaches the gateway only
-- when the writer's transaction commits, and never for a rollback. Safe to run again.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default pg_catalog.now(),
  inserted_at timestamp without time zone not null default pg_catalog.now(),
  id uuid not null default pg_catalog.gen_random_uuid(),
  primary key (id, inserted_at)
);
create index if not exists messages_inserted_at_topic_index
  on realtime.messages (inserted_at desc, topic) where extension = 'broadcast' and private is true;

-- RLS on and no policy: nobody but service_role (which bypasses RLS) may join a private channel
-- until the project writes policies, as on Supabase.
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;

-- The topic of the channel being authorized (Realtime sets it for each check) or of the message
-- being sent, for policies to compare with.
create or replace function realtime.topic() returns text
language sql stable as $$
  select nullif(pg_catalog.current_setting('realtime.topic', true), '')::text
$$;

-- Broadcast `payload` as `event` on `topic` once the calling transaction commits. Runs as the
-- caller, so RLS on realtime.messages applies to its insert; like Supabase's, it never fails the
-- caller's transaction: anything that goes wrong is a WARNING and nothing is sent. The payload
-- gets the message's id as `id` unless it has one.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql as $$
declare
  message_id uuid := pg_catalog.gen_random_uuid();
begin
  begin
    perform pg_catalog.set_config('realtime.topic', topic, true);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (
      message_id,
      case when payload ? 'id' then payload
           else pg_catalog.jsonb_set(payload, '{id}', pg_catalog.to_jsonb(message_id)) end,
      event, topic, private, 'broadcast');
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end
$$;

-- For a row trigger: broadcast the change of one row as `{schema, table, operation, record,
-- old_record}` (record or old_record null where the operation has none).
create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void
language plpgsql as $$
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation in ('INSERT', 'UPDATE', 'DELETE') then
    perform realtime.send(
      pg_catalog.jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                    'table', table_name, 'schema', table_schema),
      event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception when others then
  raise exception 'Failed to process the row: %', sqlerrm;
end
$$;

-- Each inserted broadcast, sent to the gateway's listener as JSON: id, topic, event, private and
-- payload; one too large for a notification (8000 bytes) is sent as its id alone, and the gateway
-- reads the committed row. Runs as its owner so that no caller's role can make it fail.
create or replace function realtime.reactor_devstack_notify_message() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  message text := pg_catalog.json_build_object(
    'id', new.id, 'topic', new.topic, 'event', new.event, 'private', coalesce(new.private, false),
    'payload', new.payload)::text;
begin
  if pg_catalog.octet_length(message) > 7900 then
    message := pg_catalog.json_build_object('big', new.id)::text;
  end if;
  perform pg_catalog.pg_notify('reactor_realtime_messages', message);
  return null;
end
$$;

do $$
begin
  if not exists (
    select from pg_catalog.pg_trigger
    where tgname = 'reactor_devstack_notify_message' and tgrelid = 'realtime.messages'::regclass
  ) then
    create trigger reactor_devstack_notify_message
      after insert on realtime.messages
      for each row
      when (new.extension = 'broadcast' and new.event is not null and new.payload is not null)
      execute function realtime.reactor_devstack_notify_message();
  end if;
end
$$;
