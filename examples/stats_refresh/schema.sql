-- examples/stats_refresh: ten statistics, each refreshed by its own database function.
-- Each run records when it started and ended, so a test can see they ran side by side.

create table if not exists public.example_stats (
  name text primary key,
  value numeric not null,
  started_at timestamptz not null,
  refreshed_at timestamptz not null
);
revoke all on public.example_stats from public, anon, authenticated;

do $do$
begin
  for n in 1..10 loop
    execute format($f$
      create or replace function public.refresh_stat_%1$s() returns numeric
      language plpgsql security definer set search_path = pg_catalog, public as $body$
      declare
        started timestamptz := clock_timestamp();
        result numeric;
      begin
        perform pg_sleep(0.3);  -- stands in for an expensive aggregate
        select count(*) * %1$s into result from public.jobs;
        insert into public.example_stats (name, value, started_at, refreshed_at)
        values ('stat_%1$s', result, started, clock_timestamp())
        on conflict (name) do update
          set value = excluded.value, started_at = excluded.started_at, refreshed_at = excluded.refreshed_at;
        return result;
      end
      $body$
    $f$, n);
    execute format('revoke all on function public.refresh_stat_%s() from public, anon, authenticated', n);
    execute format('grant execute on function public.refresh_stat_%s() to service_role', n);
  end loop;
end
$do$;
