-- reactor 0026: reactor_set_limits locks its type's row once. It read the row `for update` just
-- before the update that locks it anyway, and did nothing with what it read: the SQL guard
-- mutation run found that read's conditions reversible with no test the wiser (docs/reliability.md,
-- "SQL guard clauses").

-- Set p_job_type's limits in p_table: the keys of p_limits that are given (concurrency, rate,
-- per_seconds, per_user, paused; null clears a limit), the others kept. Returns the row as stored,
-- or {} when no limit is left and the type is not paused (the row is then deleted).
create or replace function public.reactor_set_limits(p_table text, p_job_type text, p_limits jsonb)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  t text := reactor.job_table(p_table);
  lim reactor.job_limits;
  key text;
begin
  perform reactor.check_job_types(array[p_job_type]);
  if jsonb_typeof(p_limits) is distinct from 'object' then
    raise exception 'p_limits must be a JSON object';
  end if;
  for key in select jsonb_object_keys(p_limits) loop
    if key not in ('concurrency', 'rate', 'per_seconds', 'per_user', 'paused') then
      raise exception 'p_limits: unknown limit %; give concurrency, rate, per_seconds, per_user or paused', key;
    end if;
  end loop;
  insert into reactor.job_limits (job_table, job_type) values (t, p_job_type) on conflict do nothing;
  begin
    update reactor.job_limits l set
      concurrency = case when p_limits ? 'concurrency' then (p_limits ->> 'concurrency')::integer else l.concurrency end,
      rate = case when p_limits ? 'rate' then (p_limits ->> 'rate')::integer else l.rate end,
      per_seconds = case when p_limits ? 'per_seconds' then (p_limits ->> 'per_seconds')::integer else l.per_seconds end,
      per_user = case when p_limits ? 'per_user' then (p_limits ->> 'per_user')::integer else l.per_user end,
      paused = case when p_limits ? 'paused' then coalesce((p_limits ->> 'paused')::boolean, false) else l.paused end
    where l.job_table = t and l.job_type = p_job_type
    returning * into lim;
  exception when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception 'p_limits: %', sqlerrm
      using hint = 'concurrency 0 or more, rate 1 to 10000 with per_seconds 1 to 86400, per_user 1 or more, paused true or false';
  end;
  if lim.concurrency is null and lim.rate is null and lim.per_user is null and not lim.paused then
    delete from reactor.job_limits l where l.job_table = t and l.job_type = p_job_type;
    return '{}';
  end if;
  return jsonb_strip_nulls(jsonb_build_object(
    'concurrency', lim.concurrency, 'rate', lim.rate, 'per_seconds', lim.per_seconds,
    'per_user', lim.per_user, 'paused', lim.paused));
end
$$;

insert into reactor.schema_migrations (version) values ('0026_set_limits_locks_once') on conflict do nothing;
