-- The chaos run's audit: every change of a job's status, with the lease it ended and the lease it
-- began, stamped by the database's clock; a job handed to a worker on insert (0007) counts as a
-- change from pending. Workers never see this schema; a trigger fills it from
-- inside the worker functions' own transactions, so no update of public.jobs escapes it.

create schema chaos;

create table chaos.transitions (
  seq bigint generated always as identity primary key,
  job_id bigint not null,
  old_status text not null,
  new_status text not null,
  old_attempts integer not null,
  new_attempts integer not null,
  old_token uuid,
  new_token uuid,
  old_worker text,
  new_worker text,
  old_started boolean not null default true,  -- the lease it ended had been confirmed (started_at)
  result jsonb,
  last_error text,
  at timestamptz not null default clock_timestamp()
);

create index on chaos.transitions (job_id, seq);

create function chaos.record_transition() returns trigger
language plpgsql as $$
begin
  insert into chaos.transitions (job_id, old_status, new_status, old_attempts, new_attempts,
                                 old_token, new_token, old_worker, new_worker, old_started, result, last_error)
  values (new.id, old.status, new.status, old.attempts, new.attempts,
          old.lease_token, new.lease_token, old.locked_by, new.locked_by, old.started_at is not null,
          new.result, new.last_error);
  return null;
end
$$;

create function chaos.record_hand_off() returns trigger
language plpgsql as $$
begin
  insert into chaos.transitions (job_id, old_status, new_status, old_attempts, new_attempts,
                                 new_token, new_worker)
  values (new.id, 'pending', new.status, new.attempts - 1, new.attempts, new.lease_token, new.locked_by);
  return null;
end
$$;

create trigger chaos_hand_offs after insert on public.jobs
  for each row when (new.status = 'processing') execute function chaos.record_hand_off();

-- A finished job must never change again, so any update of one is recorded, status change or not.
create trigger chaos_transitions after update on public.jobs
  for each row
  when (old.status is distinct from new.status or old.status in ('completed', 'failed', 'cancelled'))
  execute function chaos.record_transition();
