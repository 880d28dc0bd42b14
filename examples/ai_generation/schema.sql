-- examples/ai_generation: credits, spent atomically in SQL, at most once per job.

create table if not exists public.example_credits (
  user_id uuid primary key,
  balance integer not null check (balance >= 0)
);
create table if not exists public.example_credit_charges (
  job_id bigint primary key,
  user_id uuid not null,
  amount integer not null,
  charged_at timestamptz not null default now()
);
revoke all on public.example_credits, public.example_credit_charges from public, anon, authenticated;

-- Take `p_amount` credits from the user for job `p_job_id`, or raise 'insufficient credits'.
-- A retried job is charged once: the charge row is the proof it was paid.
create or replace function public.consume_credits(p_user_id uuid, p_amount integer, p_job_id bigint)
returns integer
language plpgsql security definer set search_path = pg_catalog, public as $$
declare
  left_over integer;
begin
  if exists (select 1 from public.example_credit_charges where job_id = p_job_id) then
    return (select balance from public.example_credits where user_id = p_user_id);
  end if;
  update public.example_credits set balance = balance - p_amount
  where user_id = p_user_id and balance >= p_amount
  returning balance into left_over;
  if left_over is null then
    raise exception 'insufficient credits: user % needs % credits, has %', p_user_id, p_amount,
      coalesce((select balance from public.example_credits where user_id = p_user_id), 0);
  end if;
  insert into public.example_credit_charges (job_id, user_id, amount) values (p_job_id, p_user_id, p_amount);
  return left_over;
end
$$;
revoke all on function public.consume_credits(uuid, integer, bigint) from public, anon, authenticated;
grant execute on function public.consume_credits(uuid, integer, bigint) to service_role;

-- Signed-in users may insert these job types, at priority 0, a few at a time.
select reactor.allow_insert('jobs', 'ai_generation', p_max_attempts => 3, p_max_pending => 5);
select reactor.allow_insert('jobs', 'review_processing', p_max_attempts => 3, p_max_pending => 20);
select reactor.allow_insert('jobs', 'sentiment_analysis', p_max_attempts => 3, p_max_pending => 20);
