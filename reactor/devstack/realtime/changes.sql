-- The local stack's change capture for Realtime. Supabase reads changes from a logical replication
-- slot (wal2json); the local Postgres runs with wal_level=replica and the embedded one cannot
-- decode either, so triggers on every table of the `supabase_realtime` publication send each
-- change with pg_notify instead. Notifications reach listeners only when the transaction commits,
-- in commit order, and never for a rollback: the same guarantees the slot gives.
-- Safe to run again. Everything lives in `_realtime`, which the API roles cannot use.

create schema if not exists _realtime;
revoke all on schema _realtime from public;

-- Changes too large for a notification (NOTIFY payloads stop at 8000 bytes): the notification
-- carries only the id. Unlogged, since a change is worth nothing after a crash; the listener
-- deletes each row as it reads it and sweeps up rows it never heard about.
create unlogged table if not exists _realtime.big_changes (
  id bigint generated always as identity primary key,
  change text not null,
  created_at timestamptz not null default now()
);

-- What some subscriber could receive: one row per table and event of every live binding of every
-- gateway on this database, written before the gateway says "Subscribed to PostgreSQL" and
-- rewritten every couple of seconds. The capture trigger skips any change no row asks for, so a
-- write to a table nobody watches, or an UPDATE no subscriber's filter can match, costs its
-- transaction a lookup instead of a notification: in Supabase decoding happens outside the
-- writer's transaction, and a trigger should not make every write pay for it. `col` and `vals`
-- narrow a row to changes whose new `col`, as text, is one of `vals`; they are set only when that
-- test is exact (an `eq` or `in` filter on a text, varchar or enum column with a deterministic
-- collation) and the gateway still applies every filter itself. Rows of a gateway that stopped
-- rewriting them expire after 30 s.
create unlogged table if not exists _realtime.wanted (
  gateway bigint not null,
  relid oid not null,
  event text not null,
  col text,
  vals text[],
  written_at timestamptz not null default pg_catalog.now()
);
create index if not exists wanted_relid on _realtime.wanted (relid);

-- Replace gateway `p_gateway`'s rows with `p_bindings`: [{relid, event, col, op, value}], where
-- col/op/value is one of the binding's filter conditions (or null).
create or replace function _realtime.want(p_gateway bigint, p_bindings jsonb) returns void
language plpgsql set search_path = '' as $$
begin
  delete from _realtime.wanted w
  where w.gateway = p_gateway or w.written_at < pg_catalog.now() - interval '30 seconds';
  insert into _realtime.wanted (gateway, relid, event, col, vals)
  select p_gateway, b.relid, b.event,
         case when x.exact then b.col end,
         case when x.exact then case b.op when 'in' then b.value::text[] else array[b.value] end end
  from pg_catalog.jsonb_to_recordset(p_bindings) as b(relid oid, event text, col text, op text, value text)
  cross join lateral (
    select b.event in ('INSERT', 'UPDATE') and b.op in ('eq', 'in') and coalesce((
      select (a.atttypid in ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype)
              or t.typtype = 'e')
             and coalesce(c.collisdeterministic, true)
      from pg_catalog.pg_attribute a
      join pg_catalog.pg_type t on t.oid = a.atttypid
      left join pg_catalog.pg_collation c on c.oid = a.attcollation
      where a.attrelid = b.relid and a.attname = b.col and a.attnum > 0 and not a.attisdropped
    ), false) as exact
  ) x;
end
$$;

-- One change as JSON: schema, table, relid, type, commit_timestamp, record and old_record (whole
-- rows; the gateway trims them per subscriber), sent for each row a statement changed, in row
-- order. The triggers are statement-level, with the statement's rows as transition tables, so a
-- statement that changes rows nobody wants pays one lookup, not a trigger call per row: a claim
-- or a completion of 1,000 jobs used to pay 1,000 plpgsql calls, which cost a worker a third of
-- its throughput on the benchmark machine. An UPDATE's old and new rows are paired by position:
-- Postgres appends each updated row's old and new versions to the two transition tables together.
-- Runs as the owner (the bootstrap superuser) so that writes by anon, authenticated or
-- service_role never fail here, with an empty search_path so no caller can redirect a name.
-- TimeZone is pinned to UTC so timestamps read the same whoever writes, as they do from
-- Realtime's own connection. Filter values enter the query only as literals.
create or replace function _realtime.capture() returns trigger
language plpgsql security definer set search_path = '' set timezone = 'UTC' as $$
declare
  wants text[];
  filters jsonb;
  rows_of text;
  change text;
  big_id bigint;
begin
  -- One condition per wanted row: true when it wants every row, else its column among its values.
  select pg_catalog.array_agg(distinct case
           when w.col is null or tg_op = 'DELETE' then 'true'
           else pg_catalog.format('(_n.r).%I::text = any (%L::text[])', w.col, w.vals) end),
         pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('col', w.col, 'vals', w.vals))
  into wants, filters
  from _realtime.wanted w
  where w.relid = tg_relid and w.event in (tg_op, '*');
  if wants is null then
    return null;
  end if;
  -- A statement of a few rows that no filter matches ends here, before the query below is
  -- planned: that planning was most of the cost of capture for a one-row statement, such as the
  -- claim that follows a Realtime event. (Nested, so a DELETE never parses `new_rows`.)
  if tg_op <> 'DELETE' and not 'true' = any (wants) then
    if (select pg_catalog.count(*) from (select from new_rows limit 9) s) <= 8
       and not exists (
         select from new_rows r, pg_catalog.jsonb_to_recordset(filters) f(col text, vals text[])
         where pg_catalog.to_jsonb(r) ->> f.col = any (f.vals)) then
      return null;
    end if;
  end if;
  rows_of := case tg_op
    when 'INSERT' then '_n.i, null::record as o, _n.r as n from '
                       '(select r, pg_catalog.row_number() over () as i from new_rows r) _n'
    when 'DELETE' then '_n.i, _n.r as o, null::record as n from '
                       '(select r, pg_catalog.row_number() over () as i from old_rows r) _n'
    else '_n.i, _o.r as o, _n.r as n from'
         ' (select r, pg_catalog.row_number() over () as i from old_rows r) _o join'
         ' (select r, pg_catalog.row_number() over () as i from new_rows r) _n using (i)'
  end;
  for change in execute pg_catalog.format($q$
    select pg_catalog.json_build_object(
      'schema', %L, 'table', %L, 'relid', %s, 'type', %L,
      -- The commit time is not visible to a trigger; the time of the statement's change is the
      -- closest stand-in (Supabase's own value is the WAL commit record's time).
      'commit_timestamp', %L,
      'record', pg_catalog.to_jsonb(c.n), 'old_record', pg_catalog.to_jsonb(c.o))::text
    from (select %s where %s) c
    order by c.i
    $q$, tg_table_schema, tg_table_name, tg_relid::bigint, tg_op,
    pg_catalog.to_char(pg_catalog.clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    rows_of, pg_catalog.array_to_string(wants, ' or '))
  loop
    if pg_catalog.octet_length(change) > 7900 then
      insert into _realtime.big_changes (change) values (change) returning id into big_id;
      change := pg_catalog.json_build_object('big', big_id)::text;
    end if;
    perform pg_catalog.pg_notify('reactor_realtime', change);
  end loop;
  return null;
end
$$;

-- The capture triggers, one per event (a trigger with transition tables handles one event).
create or replace function _realtime.capture_triggers() returns table (name text, ddl text)
language sql immutable as $$
  values
    ('_realtime_capture_insert',
     'after insert on %s referencing new table as new_rows'),
    ('_realtime_capture_update',
     'after update on %s referencing old table as old_rows new table as new_rows'),
    ('_realtime_capture_delete',
     'after delete on %s referencing old table as old_rows')
$$;

-- Puts the capture triggers on every table of the publication and takes them off tables that
-- left it (and the row-level `_realtime_capture` of earlier versions off every table). Cheap when
-- nothing changed: a few catalog reads.
create or replace function _realtime.sync_triggers() returns void
language plpgsql set search_path = '' as $$
declare
  rel regclass;
  trig record;
begin
  for rel in
    select pg_catalog.format('%I.%I', p.schemaname, p.tablename)::regclass
    from pg_catalog.pg_publication_tables p
    where p.pubname = 'supabase_realtime'
  loop
    for trig in
      select t.name, t.ddl from _realtime.capture_triggers() t
      where not exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = rel and g.tgname = t.name)
    loop
      execute pg_catalog.format('create trigger %I ' || trig.ddl ||
        ' for each statement execute function _realtime.capture()', trig.name, rel);
    end loop;
  end loop;
  for trig in
    select t.tgname, t.tgrelid::regclass as rel
    from pg_catalog.pg_trigger t
    join pg_catalog.pg_class c on c.oid = t.tgrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where t.tgname = '_realtime_capture'
       or (t.tgname in (select name from _realtime.capture_triggers())
           and not exists (
             select 1 from pg_catalog.pg_publication_tables p
             where p.pubname = 'supabase_realtime' and p.schemaname = n.nspname
               and p.tablename = c.relname))
  loop
    execute pg_catalog.format('drop trigger if exists %I on %s', trig.tgname, trig.rel);
  end loop;
end
$$;

-- Whether `value` (a column's value as text, from the change) passes one filter condition. Both
-- sides are cast to the column's type and compared in SQL, as Realtime's check_equality_op does;
-- a NULL value never passes except with `is`. The operator comes from a fixed list and the values
-- only ever enter the statement as literals.
create or replace function _realtime.filter_holds(
  rel regclass, col text, op text, filter_value text, negate boolean, value text
) returns boolean
language plpgsql stable set search_path = '' as $$
declare
  typ text;
  res boolean;
begin
  select a.atttypid::pg_catalog.regtype::text into typ
  from pg_catalog.pg_attribute a
  where a.attrelid = rel and a.attname = col and a.attnum > 0 and not a.attisdropped;
  if typ is null then
    return false;
  end if;
  if op = 'isdistinct' then
    execute pg_catalog.format('select %L::%s %s %L::%s', value, typ,
      case when negate then 'is not distinct from' else 'is distinct from' end, filter_value, typ) into res;
    return res;
  end if;
  if op = 'is' then
    execute pg_catalog.format('select %L::%s %s %s', value, typ,
      case when negate then 'is not' else 'is' end, pg_catalog.upper(filter_value)) into res;
    return res;
  end if;
  execute pg_catalog.format('select %L::%s %s (%L::%s)', value, typ,
    case op
      when 'eq' then '=' when 'neq' then '!=' when 'lt' then '<' when 'lte' then '<='
      when 'gt' then '>' when 'gte' then '>=' when 'in' then '= any'
      when 'like' then 'like' when 'ilike' then 'ilike' when 'match' then '~' when 'imatch' then '~*'
    end,
    filter_value, case when op = 'in' then typ || '[]' else typ end) into res;
  return case when negate then not res else res end;
end
$$;

-- The publication's tables matching a subscription (`*` matches any name), after checking its
-- filters the way Realtime's subscription_check_filters does: the column must exist and be
-- selectable by the subscriber's role, and the value must cast to the column's type. Raises with
-- Realtime's messages.
create or replace function _realtime.subscribe_tables(
  p_schema text, p_table text, p_role text, p_cols text[], p_ops text[], p_values text[]
) returns setof regclass
language plpgsql stable set search_path = '' as $$
declare
  rel regclass;
  typ text;
  in_count integer;
  i integer;
begin
  for rel in
    select pg_catalog.format('%I.%I', p.schemaname, p.tablename)::regclass
    from pg_catalog.pg_publication_tables p
    where p.pubname = 'supabase_realtime'
      and p.schemaname like (case p_schema when '*' then '%' else p_schema end) escape ''
      and p.tablename like (case p_table when '*' then '%' else p_table end) escape ''
  loop
    for i in 1 .. coalesce(pg_catalog.array_length(p_cols, 1), 0) loop
      select a.atttypid::pg_catalog.regtype::text into typ
      from pg_catalog.pg_attribute a
      where a.attrelid = rel and a.attname = p_cols[i] and a.attnum > 0 and not a.attisdropped
        and pg_catalog.has_column_privilege(p_role, a.attrelid, a.attnum, 'SELECT');
      if typ is null then
        raise exception 'invalid column for filter %', p_cols[i];
      end if;
      if p_ops[i] = 'in' then
        execute pg_catalog.format('select pg_catalog.cardinality(%L::%s[])', p_values[i], typ) into in_count;
        if in_count > 100 then
          raise exception 'too many values for `in` filter. Maximum 100';
        end if;
      elsif p_ops[i] = 'is' then
        if p_values[i] not in ('null', 'true', 'false', 'unknown') then
          raise exception 'invalid value for is filter: must be null, true, false, or unknown';
        end if;
      elsif p_ops[i] in ('match', 'imatch') then
        perform '' ~ p_values[i];
      elsif p_ops[i] not in ('like', 'ilike') then
        execute pg_catalog.format('select %L::%s', p_values[i], typ);
      end if;
    end loop;
    return next rel;
  end loop;
end
$$;

-- Whether the subscriber with role `p_role` and JWT claims `p_claims` may select the row whose
-- primary key is in `p_key`, checked now, as that role (Realtime's apply_rls does the same). The
-- role and claims are transaction-local and end with the caller's single-statement transaction.
create or replace function _realtime.visible(p_rel regclass, p_role text, p_claims text, p_key jsonb)
returns boolean
language plpgsql volatile as $$
declare
  keys text;
  res boolean;
begin
  select pg_catalog.string_agg(pg_catalog.format('t.%1$I = r.%1$I', a.attname), ' and ')
  into keys
  from pg_catalog.pg_index i
  join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
  where i.indrelid = p_rel and i.indisprimary;
  perform pg_catalog.set_config('role', p_role, true);
  perform pg_catalog.set_config('request.jwt.claims', p_claims, true);
  execute pg_catalog.format(
    'select exists(select 1 from %1$s t, pg_catalog.jsonb_populate_record(null::%1$s, $1) r where %2$s)',
    p_rel, keys) using p_key into res;
  return res;
end
$$;
