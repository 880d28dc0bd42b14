-- examples/account_enrichment: a log of each job's steps, readable by the job's owner.

create table if not exists public.job_logs (
  id bigint generated always as identity primary key,
  job_id bigint not null,
  attempt integer not null,
  level text not null check (level in ('info', 'warning', 'error')),
  message text not null,
  created_at timestamptz not null default now()
);
create index if not exists job_logs_job_idx on public.job_logs (job_id, id);
revoke all on public.job_logs from public, anon, authenticated;
grant select on public.job_logs to authenticated;
grant all on public.job_logs to service_role;
alter table public.job_logs enable row level security;
drop policy if exists job_logs_owner_reads on public.job_logs;
create policy job_logs_owner_reads on public.job_logs for select to authenticated
  using (exists (select 1 from public.jobs j where j.id = job_id and j.user_id = auth.uid()));
