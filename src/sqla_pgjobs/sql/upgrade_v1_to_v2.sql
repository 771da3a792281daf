-- sqla-pgjobs schema: upgrade from version 1 to version 2.
--
-- Released SQL is frozen: this file, once released, is never edited either (version 3
-- is a new step). The token app_jobs stands for the schema name, as in schema_v1.sql.
--
-- What changes (each fix of 1-6 has a test that fails against version 1 in
-- tests/sql/test_schema_v2.py; 7, 8 and 9 are tested in tests/sql/test_history.py,
-- tests/sql/test_pauses.py and tests/sql/test_cancel.py):
--
-- 1. run_scheduled_job without fire_time no longer refuses a fire because the last one
--    was less than 500 ms ago: fires are deduplicated by an explicit fire_time only (the
--    Python scheduler passes one); a call without it keeps the original's rule (refused
--    while the previous fire's job is pending or running).
-- 2. A job_expiry that is zero, negative or over 365000 days is refused (SQLSTATE 22023,
--    COLUMN job_expiry) by every function that takes one, through one helper
--    (assert_interval). Version 1 took every lock of a holder that never heartbeats.
-- 3. The scheduled-job functions refuse a lease out of that range, and
--    run_scheduled_job an infinite fire_time, instead of failing with "timestamp out of
--    range" or recording a claim that has already lapsed or a fire that blocks the
--    schedule forever.
-- 4. get_jobs reads the head of each priority in the same statement as its candidates,
--    so the cursor's lower bound comes from the cursor's own snapshot: a job made
--    runnable with an older run_at while the call waited for its cursor is no longer
--    skipped.
-- 5. A running job that add_job detaches from its key is left one attempt beyond
--    max_attempts, so that a release_jobs refund cannot make it runnable again.
-- 6. The operator level may execute alive_until, the schema's one rule for "is this
--    worker alive", so that pgjobs status and other operator views use it instead of
--    computing it again (roles that hold the level get it here).
-- 7. Job history: every job that finishes (completed, or failed for good) gets a row in
--    job_history, written by the function that finishes it, with an expiry from
--    history_retention (per outcome, task and queue; zero records nothing);
--    prune_job_history deletes expired rows in bounded batches. app_jobs.jobs and every
--    function's signature and result stay as they were.
-- 8. Paused queues and tasks: pause_queue / pause_task (and resume_*) record a pause in
--    app_jobs.pauses; get_jobs (so also the reference's get_job) takes no job of a
--    paused queue or task, and next_run_at does not count them.
-- 9. Cancellation: cancel_jobs ends waiting jobs as cancelled at once and records a
--    request (app_jobs.cancel_requests, a NOTIFY on jobs:cancel) for running ones, which
--    end as cancelled when their run fails, is given back or loses its worker
--    (fail_job_batch, release_jobs, recover_jobs), never retried.
-- 10. fail_jobs_for_good: a worker fails jobs whose payload cannot be valid, without
--    retrying them (typed tasks).
-- 11. retry_jobs_at: a worker retries jobs at times of its choosing (a task's backoff, a
--    handler's RetryAt) or snoozes them (the attempt refunded).
-- 12. Trace contexts: set_trace_contexts stores the W3C trace context of the span that
--    enqueued jobs (app_jobs.job_trace_contexts, a table of its own keyed by job id: a
--    column would change the row type of app_jobs.jobs, see below); trace_contexts reads
--    them back for the worker's spans; prune_job_history deletes those whose job is gone
--    from both jobs and job_history.
-- 13. A read access level: USAGE on the schema, SELECT on its tables and alive_until,
--    for dashboards, metrics and status views that must not change anything. It is not
--    below enqueue (an enqueue or worker role reads nothing); operator contains it.
--
-- Online: the upgrade runs beside version 1 workers (ours and the reference Node
-- worker). Every change is a CREATE OR REPLACE FUNCTION with the signature and
-- privileges unchanged (complete_jobs and permanently_fail_jobs become plpgsql), plus new
-- functions and new tables: no table of version 1 is altered or locked beyond ACCESS
-- SHARE, and the row type of app_jobs.jobs stays the same. (A new
-- column would have been the obvious marker for fix 5, but it changes the row type, and
-- a session holding a prepared "SELECT * FROM app_jobs.get_jobs(...)" or the worker's
-- "j.*" cycle statement then fails on its next call with "cached plan must not change
-- result type", since replacing get_jobs invalidates the plan: measured with psycopg's
-- automatic prepared statements, the error repeats until the session ends.) Calls in
-- flight finish with the old definitions; the next call of each session uses the new.

-- Migrations of the job schema take this lock for the rest of their transaction.
DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(7064106277914394624); END $$;

DO $$
DECLARE
  v_version integer;
BEGIN
  SELECT max(m.version) INTO v_version FROM app_jobs.migrations m;
  IF v_version IS DISTINCT FROM 1 THEN
    RAISE EXCEPTION 'the job schema is not at version 1 (it is at version %)', v_version
      USING ERRCODE = '55000',
            HINT = 'upgrade_v1_to_v2 applies to version 1 only.';
  END IF;
END
$$;

--------------------------------------------------------------------------------------------
-- Internal helper
--------------------------------------------------------------------------------------------

-- A duration argument (job_expiry, lease): positive, and at most 365000 days (about 1000
-- years, sqla_pgjobs.validation.MAX_INTERVAL), so that now() plus or minus it stays
-- inside the timestamp range (4713 BC to 294276 AD) whatever the clock says. Zero or
-- negative makes no sense for either: a job_expiry of 0 takes over every lock of a holder
-- that never heartbeats, a lease of 0 has lapsed before its holder sees it.
CREATE FUNCTION app_jobs.assert_interval(name text, value interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF value <= interval '0' OR value > interval '365000 days' THEN
    RAISE EXCEPTION '% must be a positive interval of at most 365000 days, got %', name, value
      USING ERRCODE = '22023', COLUMN = name;
  END IF;
END
$$;

--------------------------------------------------------------------------------------------
-- History (fix 7)
--------------------------------------------------------------------------------------------

-- One row per finished job: completed (complete_job, complete_job_batch, worker_cycle,
-- complete_jobs), failed for good (its last attempt failed, its worker died on its last
-- attempt, or permanently_fail_jobs). app_jobs.jobs keeps holding only unfinished jobs
-- and, as before, jobs failed for good (visibly, until retried or deleted); each run to a
-- finish adds a row here, so a failed job retried to completion has two.
--
-- Rows are written by the functions that finish jobs, in the statement that finishes
-- them (a worker's cycle records its whole batch in the cycle's own statement), so the
-- reference Node worker's completions are recorded too. expires_at comes from
-- history_retention when the row is written: prune_job_history deletes rows past it.
CREATE TABLE app_jobs.job_history (
  id bigint GENERATED ALWAYS AS IDENTITY,
  job_id bigint NOT NULL,
  database_id uuid,
  task_identifier text NOT NULL,
  queue_name text,
  payload json NOT NULL,
  key text,
  priority integer NOT NULL,
  attempts integer NOT NULL,
  max_attempts integer NOT NULL,
  created_at timestamptz NOT NULL,
  run_at timestamptz NOT NULL,
  -- The start of the earliest attempt that ended in a recorded way (failed and retried,
  -- or finished): attempts cut short by a crash or a release leave no start behind.
  first_started_at timestamptz,
  -- The start of the last attempt (NULL for a job that never ran, e.g. failed by hand).
  started_at timestamptz,
  finished_at timestamptz NOT NULL,
  outcome text NOT NULL,
  last_error text,
  -- The worker that held the job when it finished (NULL when none did).
  worker_id text,
  -- When prune_job_history may delete the row (NULL: never).
  expires_at timestamptz,
  CONSTRAINT job_history_pkey PRIMARY KEY (id),
  CONSTRAINT job_history_outcome_check
    CHECK (outcome IN ('completed', 'failed', 'cancelled', 'discarded'))
);

-- "What happened to job 42": pgjobs jobs show and the history of one job.
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);
-- prune_job_history reads the oldest expired rows off this index, in batches.
CREATE INDEX job_history_expires_at_idx ON app_jobs.job_history (expires_at)
  WHERE expires_at IS NOT NULL;

-- How long history rows are kept, by outcome, for every task and queue (task_identifier
-- and queue_name NULL) or for one task, one queue, or one task in one queue. The most
-- specific rule wins (a task's rule over a queue's, a queue's over the default). keep:
-- an interval; NULL keeps the rows forever; zero records nothing. The defaults: completed
-- and cancelled jobs 1 day (enough to answer "did it run, when, how long": they are the
-- bulk of the rows), failed 14 days (long enough to notice over a weekend or a holiday
-- and retry), discarded 7 days.
CREATE TABLE app_jobs.history_retention (
  task_identifier text,
  queue_name text,
  outcome text NOT NULL,
  keep interval,
  CONSTRAINT history_retention_key UNIQUE NULLS NOT DISTINCT (task_identifier, queue_name, outcome),
  CONSTRAINT history_retention_outcome_check
    CHECK (outcome IN ('completed', 'failed', 'cancelled', 'discarded')),
  CONSTRAINT history_retention_keep_check
    CHECK (keep >= interval '0' AND keep <= interval '365000 days')
);

INSERT INTO app_jobs.history_retention (outcome, keep) VALUES
  ('completed', interval '1 day'),
  ('failed', interval '14 days'),
  ('cancelled', interval '1 day'),
  ('discarded', interval '7 days');

-- The start of the first attempt of jobs that failed and will be retried (a row only for
-- those: rare, and gone when the job is recorded in job_history).
CREATE TABLE app_jobs.job_first_starts (
  job_id bigint NOT NULL,
  started_at timestamptz NOT NULL,
  CONSTRAINT job_first_starts_pkey PRIMARY KEY (job_id)
);

-- A finished job as it was when it ended: its lock names its holder and the start of its
-- last attempt, and run_at when it was due, all of which the finishing statement may have
-- changed in the table already (NULL arguments leave the job's own values).
CREATE FUNCTION app_jobs.as_finished(
  job app_jobs.jobs,
  started_at timestamptz,
  worker_id text,
  run_at timestamptz DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_populate_record(as_finished.job,
                               jsonb_strip_nulls(jsonb_build_object(
                                 'locked_at', as_finished.started_at,
                                 'locked_by', as_finished.worker_id,
                                 'run_at', as_finished.run_at)));
$$;

-- Record jobs that ended with outcome (each as it was when it ended, see as_finished),
-- with the expiry of the most specific retention rule; none when that rule keeps nothing.
-- The rows of one call get ids in job id order.
CREATE FUNCTION app_jobs.record_history(outcome text, finished app_jobs.jobs[])
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH starts AS (
    DELETE FROM app_jobs.job_first_starts s
     WHERE s.job_id IN (SELECT f.id FROM unnest(record_history.finished) f)
    RETURNING s.job_id, s.started_at
  )
  INSERT INTO app_jobs.job_history (
    job_id, database_id, task_identifier, queue_name, payload, key, priority, attempts,
    max_attempts, created_at, run_at, first_started_at, started_at, finished_at, outcome,
    last_error, worker_id, expires_at
  )
  SELECT f.id, f.database_id, f.task_identifier, f.queue_name, f.payload, f.key, f.priority,
         f.attempts, f.max_attempts, f.created_at, f.run_at,
         coalesce(s.started_at, f.locked_at), f.locked_at, now(), record_history.outcome,
         f.last_error, f.locked_by, now() + r.keep
    FROM unnest(record_history.finished) f
    LEFT JOIN starts s ON s.job_id = f.id
    LEFT JOIN LATERAL (
      SELECT h.keep
        FROM app_jobs.history_retention h
       WHERE h.outcome = record_history.outcome
         AND (h.task_identifier IS NULL OR h.task_identifier = f.task_identifier)
         AND (h.queue_name IS NULL OR h.queue_name = f.queue_name)
       ORDER BY h.task_identifier IS NULL, h.queue_name IS NULL
       LIMIT 1
    ) r ON true
   WHERE r.keep IS DISTINCT FROM interval '0'
   ORDER BY f.id;
$$;

-- Set how long history rows of outcome are kept (see history_retention), for every task
-- and queue, one task, one queue, or one task in one queue; keep NULL: forever, zero:
-- not recorded. Applies to rows recorded from now on (prune_job_history's older_than
-- removes older rows by age). Returns the rule as stored.
CREATE FUNCTION app_jobs.set_history_retention(
  outcome text,
  keep interval,
  task_identifier text DEFAULT NULL,
  queue_name text DEFAULT NULL
) RETURNS app_jobs.history_retention
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rule app_jobs.history_retention;
BEGIN
  IF set_history_retention.outcome IS NULL
     OR set_history_retention.outcome NOT IN ('completed', 'failed', 'cancelled', 'discarded')
  THEN
    RAISE EXCEPTION 'outcome % is not one of completed, failed, cancelled, discarded',
      quote_nullable(set_history_retention.outcome)
      USING ERRCODE = '22023', COLUMN = 'outcome';
  END IF;
  IF set_history_retention.keep < interval '0'
     OR set_history_retention.keep > interval '365000 days'
  THEN
    RAISE EXCEPTION 'keep must be zero (record nothing), NULL (keep forever) or a positive interval of at most 365000 days, got %',
      set_history_retention.keep
      USING ERRCODE = '22023', COLUMN = 'keep';
  END IF;
  INSERT INTO app_jobs.history_retention AS h (task_identifier, queue_name, outcome, keep)
  VALUES (set_history_retention.task_identifier, set_history_retention.queue_name,
          set_history_retention.outcome, set_history_retention.keep)
  ON CONFLICT ON CONSTRAINT history_retention_key DO UPDATE SET keep = excluded.keep
  RETURNING h.* INTO v_rule;
  RETURN v_rule;
END
$$;

-- Periodic upkeep that one process at a time should do (pruning the history): when each
-- task last ran, and by whom. claim_maintenance hands it out.
CREATE TABLE app_jobs.maintenance (
  name text NOT NULL,
  last_run_at timestamptz NOT NULL,
  last_run_by text,
  CONSTRAINT maintenance_pkey PRIMARY KEY (name)
);

INSERT INTO app_jobs.maintenance (name, last_run_at) VALUES ('prune_job_history', 'epoch');

-- True for exactly one caller per interval `every`: the one that finds the task's last
-- run at least that long ago records itself as running it now (the row lock makes a
-- concurrent caller wait and then see the new time). An unknown task is refused.
CREATE FUNCTION app_jobs.claim_maintenance(name text, worker_id text, every interval)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_claimed boolean;
BEGIN
  PERFORM app_jobs.assert_worker_id(claim_maintenance.worker_id);
  PERFORM app_jobs.assert_interval('every', claim_maintenance.every);
  UPDATE app_jobs.maintenance m
     SET last_run_at = now(), last_run_by = claim_maintenance.worker_id
   WHERE m.name = claim_maintenance.name
     AND m.last_run_at <= now() - claim_maintenance.every
  RETURNING true INTO v_claimed;
  IF v_claimed IS NULL AND NOT EXISTS (SELECT 1 FROM app_jobs.maintenance m
                                        WHERE m.name = claim_maintenance.name) THEN
    RAISE EXCEPTION 'maintenance task % is not one of: prune_job_history',
      quote_nullable(claim_maintenance.name)
      USING ERRCODE = '22023', COLUMN = 'name';
  END IF;
  RETURN coalesce(v_claimed, false);
END
$$;

-- Delete up to max_rows history rows: those past their expiry, or, with older_than, those
-- that finished longer ago than that whatever their expiry. One call is one batch, so
-- that the locks it takes are bounded by max_rows; call it until it returns less than
-- max_rows (sqla_pgjobs' prune does, pausing between batches). Rows another pruner is
-- deleting are skipped. Returns how many rows were deleted.
CREATE FUNCTION app_jobs.prune_job_history(
  max_rows integer DEFAULT 10000,
  older_than interval DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_max integer := coalesce(prune_job_history.max_rows, 10000);
  v_deleted integer;
BEGIN
  PERFORM app_jobs.assert_positive('max_rows', v_max);
  IF prune_job_history.older_than IS NULL THEN
    -- By ctid (a TID scan of the rows just locked): with "id IN (...)" the planner
    -- hashed the batch and scanned the whole table for it, 20 times slower at 1M rows.
    DELETE FROM app_jobs.job_history h
     WHERE h.ctid = ANY (ARRAY(SELECT e.ctid FROM app_jobs.job_history e
                                WHERE e.expires_at <= now()
                                ORDER BY e.expires_at
                                LIMIT v_max
                                  FOR UPDATE SKIP LOCKED));
  ELSE
    PERFORM app_jobs.assert_interval('older_than', prune_job_history.older_than);
    -- By id: ids grow with finishing time closely enough that the oldest ids go first.
    DELETE FROM app_jobs.job_history h
     WHERE h.ctid = ANY (ARRAY(SELECT e.ctid FROM app_jobs.job_history e
                                WHERE e.finished_at < now() - prune_job_history.older_than
                                ORDER BY e.id
                                LIMIT v_max
                                  FOR UPDATE SKIP LOCKED));
  END IF;
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  -- First starts of jobs that are gone without a history row (deleted by hand).
  DELETE FROM app_jobs.job_first_starts s
   WHERE s.job_id IN (SELECT f.job_id FROM app_jobs.job_first_starts f
                       WHERE NOT EXISTS (SELECT 1 FROM app_jobs.jobs j WHERE j.id = f.job_id)
                       LIMIT v_max
                         FOR UPDATE SKIP LOCKED);
  -- Trace contexts (fix 12) of jobs gone from both jobs and job_history.
  DELETE FROM app_jobs.job_trace_contexts c
   WHERE c.job_id IN (SELECT t.job_id FROM app_jobs.job_trace_contexts t
                       WHERE NOT EXISTS (SELECT 1 FROM app_jobs.jobs j WHERE j.id = t.job_id)
                         AND NOT EXISTS (SELECT 1 FROM app_jobs.job_history h
                                          WHERE h.job_id = t.job_id)
                       LIMIT v_max
                         FOR UPDATE SKIP LOCKED);
  RETURN v_deleted;
END
$$;

--------------------------------------------------------------------------------------------
-- Paused queues and tasks (fix 8)
--------------------------------------------------------------------------------------------

-- Queues and tasks no worker takes jobs of (get_jobs, and so the reference's get_job, skip
-- them; next_run_at does not wake a worker for them). Jobs keep coming in, and running
-- ones finish; resuming makes the waiting ones runnable at once.
CREATE TABLE app_jobs.pauses (
  kind text NOT NULL,
  name text NOT NULL,
  paused_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  paused_by name NOT NULL DEFAULT pg_catalog.session_user(),
  CONSTRAINT pauses_pkey PRIMARY KEY (kind, name),
  CONSTRAINT pauses_kind_check CHECK (kind IN ('queue', 'task')),
  CONSTRAINT pauses_name_check CHECK (pg_catalog.length(name) BETWEEN 1 AND 126)
);

-- Pause (paused = true) or resume the queue or task `name`; returns whether that changed
-- anything (false: it already was so). A resume wakes the workers.
CREATE FUNCTION app_jobs.set_paused(kind text, name text, paused boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_changed integer;
  v_argument text := CASE set_paused.kind WHEN 'queue' THEN 'queue_name' ELSE 'task_identifier' END;
BEGIN
  IF set_paused.name IS NULL OR length(set_paused.name) NOT BETWEEN 1 AND 126 THEN
    RAISE EXCEPTION '% must be a text of 1 to 126 characters, got %', v_argument,
      quote_nullable(set_paused.name)
      USING ERRCODE = '22023', COLUMN = v_argument;
  END IF;
  IF set_paused.paused THEN
    INSERT INTO app_jobs.pauses (kind, name) VALUES (set_paused.kind, set_paused.name)
    ON CONFLICT ON CONSTRAINT pauses_pkey DO NOTHING;
  ELSE
    DELETE FROM app_jobs.pauses p WHERE p.kind = set_paused.kind AND p.name = set_paused.name;
  END IF;
  GET DIAGNOSTICS v_changed = ROW_COUNT;
  IF v_changed > 0 AND NOT set_paused.paused THEN
    PERFORM pg_notify('jobs:insert', '');
  END IF;
  RETURN v_changed > 0;
END
$$;

CREATE FUNCTION app_jobs.pause_queue(queue_name text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT app_jobs.set_paused('queue', pause_queue.queue_name, true) $$;

CREATE FUNCTION app_jobs.resume_queue(queue_name text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT app_jobs.set_paused('queue', resume_queue.queue_name, false) $$;

CREATE FUNCTION app_jobs.pause_task(task_identifier text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT app_jobs.set_paused('task', pause_task.task_identifier, true) $$;

CREATE FUNCTION app_jobs.resume_task(task_identifier text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT app_jobs.set_paused('task', resume_task.task_identifier, false) $$;

--------------------------------------------------------------------------------------------
-- Cancellation (fix 9)
--------------------------------------------------------------------------------------------

-- Running jobs an operator asked to stop (cancel_jobs), with the worker that held each
-- then. A row lasts until its job ends: the run fails (fail_job_batch), is given back
-- (release_jobs) or its worker is gone (recover_jobs): the job then ends as cancelled,
-- never retried; or it completes anyway (the work is done, and is recorded as completed),
-- or an operator removes, fails or reschedules it. Workers read their rows with
-- cancel_requested_jobs, woken by a NOTIFY on jobs:cancel whose payload is their id.
CREATE TABLE app_jobs.cancel_requests (
  job_id bigint NOT NULL,
  worker_id text NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  requested_by name NOT NULL DEFAULT pg_catalog.session_user(),
  CONSTRAINT cancel_requests_pkey PRIMARY KEY (job_id)
);

CREATE INDEX cancel_requests_worker_id_idx ON app_jobs.cancel_requests (worker_id);

-- End the listed jobs as cancelled (internal): remove_jobs with force (delete them, free
-- their holders' queues, drop their cancel requests, record them in job_history), each
-- with the paired error message as its last error (NULL: the job's own last_error).
-- Returns the jobs as recorded.
CREATE FUNCTION app_jobs.end_cancelled(job_ids bigint[], error_messages text[])
RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  UPDATE app_jobs.jobs j
     SET last_error = c.error_message
    FROM unnest(end_cancelled.job_ids, end_cancelled.error_messages) AS c(id, error_message)
   WHERE j.id = c.id AND c.error_message IS NOT NULL;
  RETURN QUERY
  SELECT * FROM app_jobs.remove_jobs('cancelled', end_cancelled.job_ids, NULL, true);
END
$$;

-- Cancel the listed jobs. One row per distinct id, with what became of it:
--   cancelled         it was waiting (or its holder is gone): deleted, and recorded in
--                     job_history as cancelled, now;
--   cancel_requested  a live worker is running it (or holds it, ready to start): that
--                     worker is asked to stop it (a NOTIFY on jobs:cancel with the worker's
--                     id; its next cycle and heartbeat read the request too). The job ends
--                     as cancelled when the run ends other than by completing, see
--                     cancel_requests; a run that completes anyway is recorded completed;
--   already_failed    it failed for good (no attempt left): left as it is;
--   already_finished  it is no longer in the table, but in job_history;
--   not_found         no such job (nor a history row of one).
-- A lock counts as held as in the other administration functions (job_expiry). Jobs of
-- silent holders are recovered first, as get_jobs would.
CREATE FUNCTION app_jobs.cancel_jobs(
  job_ids bigint[],
  job_expiry interval DEFAULT interval '4 hours'
) RETURNS TABLE (job_id bigint, result text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_expiry interval := coalesce(cancel_jobs.job_expiry, interval '4 hours');
  v_waiting bigint[];
  v_running bigint[];
  v_failed bigint[];
BEGIN
  PERFORM app_jobs.recover_jobs(v_expiry);  -- also refuses a job_expiry out of range
  SELECT coalesce(array_agg(s.id) FILTER (WHERE NOT s.held AND s.attempts < s.max_attempts),
                  '{}'),
         coalesce(array_agg(s.id) FILTER (WHERE s.held), '{}'),
         coalesce(array_agg(s.id) FILTER (WHERE NOT s.held AND s.attempts >= s.max_attempts),
                  '{}')
    INTO v_waiting, v_running, v_failed
    FROM (SELECT j.id, j.attempts, j.max_attempts,
                 app_jobs.lock_is_held(j.locked_at, j.locked_by, now() - v_expiry) AS held
            FROM app_jobs.jobs j
           WHERE j.id = ANY (cancel_jobs.job_ids)
             FOR UPDATE OF j) s;

  PERFORM app_jobs.end_cancelled(v_waiting, NULL);

  IF cardinality(v_running) > 0 THEN
    INSERT INTO app_jobs.cancel_requests (job_id, worker_id)
    SELECT j.id, j.locked_by FROM app_jobs.jobs j WHERE j.id = ANY (v_running)
    ON CONFLICT ON CONSTRAINT cancel_requests_pkey
    DO UPDATE SET worker_id = EXCLUDED.worker_id;
    PERFORM pg_notify('jobs:cancel', r.worker_id)
       FROM app_jobs.cancel_requests r
      WHERE r.job_id = ANY (v_running)
      GROUP BY r.worker_id;
  END IF;

  RETURN QUERY
  SELECT l.id,
         CASE WHEN l.id = ANY (v_waiting) THEN 'cancelled'
              WHEN l.id = ANY (v_running) THEN 'cancel_requested'
              WHEN l.id = ANY (v_failed) THEN 'already_failed'
              WHEN EXISTS (SELECT 1 FROM app_jobs.job_history h WHERE h.job_id = l.id)
                THEN 'already_finished'
              ELSE 'not_found'
         END
    FROM (SELECT DISTINCT u.id FROM unnest(cancel_jobs.job_ids) AS u(id)
           WHERE u.id IS NOT NULL) AS l
   ORDER BY l.id;
END
$$;

-- The jobs worker_id has been asked to stop (cancel_jobs), in id order; NULL: none. The
-- worker reads them in each cycle and heartbeat, and at once on a NOTIFY on jobs:cancel.
CREATE FUNCTION app_jobs.cancel_requested_jobs(worker_id text) RETURNS bigint[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT array_agg(r.job_id ORDER BY r.job_id)
    FROM app_jobs.cancel_requests r
   WHERE r.worker_id = cancel_requested_jobs.worker_id;
$$;

--------------------------------------------------------------------------------------------
-- Enqueueing
--------------------------------------------------------------------------------------------

-- Enqueue one job. With a job_key, an existing job of the same tenant with that key is
-- updated in place if it is not running; if it is running, it is detached from the key
-- (it finishes, but is not retried) and a new job takes the key (C3: the key survives,
-- so repeated calls never create duplicates). NULL arguments mean their defaults (C4).
--
-- A detached job is left one attempt beyond max_attempts: no attempt is left, and none
-- is after release_jobs gives one back (its worker shutting down, or reconnecting), so it
-- never runs again beside the job that took its key. (Version 1 left it at max_attempts,
-- and a release made it runnable.) The mark is in the row itself, so that a release
-- racing the detach re-reads it when it waits for the row lock; last_error says why.
CREATE OR REPLACE FUNCTION app_jobs.add_job(
  db_id uuid,
  identifier text,
  payload json DEFAULT '{}'::json,
  job_key text DEFAULT NULL,
  queue_name text DEFAULT NULL,
  run_at timestamptz DEFAULT pg_catalog.now(),
  max_attempts integer DEFAULT 25,
  priority integer DEFAULT 0
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_payload json := coalesce(add_job.payload, '{}'::json);
  v_run_at timestamptz := coalesce(add_job.run_at, now());
  v_max_attempts integer := coalesce(add_job.max_attempts, 25);
  v_priority integer := coalesce(add_job.priority, 0);
  v_job app_jobs.jobs;
BEGIN
  IF add_job.job_key IS NULL THEN
    INSERT INTO app_jobs.jobs (database_id, queue_name, task_identifier, payload, run_at,
                               max_attempts, priority)
    VALUES (add_job.db_id, add_job.queue_name, add_job.identifier, v_payload, v_run_at,
            v_max_attempts, v_priority)
    RETURNING * INTO v_job;
    RETURN v_job;
  END IF;

  -- At most a few rounds: each round either places the job or detaches the running
  -- holder of the key, which a concurrent caller can only re-create a bounded number
  -- of times before one of us wins.
  FOR i IN 1..10 LOOP
    INSERT INTO app_jobs.jobs AS j (database_id, queue_name, task_identifier, payload,
                                    run_at, max_attempts, priority, key)
    VALUES (add_job.db_id, add_job.queue_name, add_job.identifier, v_payload, v_run_at,
            v_max_attempts, v_priority, add_job.job_key)
    ON CONFLICT (key, database_id) WHERE key IS NOT NULL DO UPDATE
      SET task_identifier = excluded.task_identifier,
          payload = excluded.payload,
          queue_name = excluded.queue_name,
          max_attempts = excluded.max_attempts,
          run_at = excluded.run_at,
          priority = excluded.priority,
          attempts = 0,
          last_error = NULL,
          updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      WHERE j.locked_at IS NULL
    RETURNING * INTO v_job;

    IF FOUND THEN
      RETURN v_job;
    END IF;

    -- Detach the running holder of the key. A max_attempts of 2147483647 (the largest
    -- integer) is lowered by one to make room for the extra attempt.
    UPDATE app_jobs.jobs j
       SET key = NULL,
           max_attempts = LEAST(j.max_attempts, 2147483646),
           attempts = LEAST(j.max_attempts, 2147483646) + 1,
           last_error = format('detached from key %s by a newer job while it ran: it is not run again',
                               j.key),
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
     WHERE j.key = add_job.job_key
       AND j.database_id IS NOT DISTINCT FROM add_job.db_id
       AND j.locked_at IS NOT NULL;
  END LOOP;

  RAISE EXCEPTION 'could not place job with key % after 10 attempts', add_job.job_key
    USING ERRCODE = '40001', HINT = 'Another session keeps taking this key; retry the transaction.';
END
$$;

--------------------------------------------------------------------------------------------
-- Taking jobs
--------------------------------------------------------------------------------------------

-- Free the jobs and queues of holders that are gone: registered workers silent for longer
-- than their heartbeat_timeout (given up for dead: their row goes too), and holders that
-- never registered (the reference Node worker) whose lock is older than job_expiry. A
-- registered worker that is alive keeps its jobs whatever their age. The interrupted
-- attempt counts; last_error says what happened. Version 2: a job whose interrupted
-- attempt was its last is recorded in job_history (failed); a job whose cancellation was
-- requested ends as cancelled (fix 9).
CREATE OR REPLACE FUNCTION app_jobs.recover_jobs(job_expiry interval DEFAULT interval '4 hours')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_now timestamptz := now();
  v_expiry interval := coalesce(recover_jobs.job_expiry, interval '4 hours');
  v_dead text[];
  v_ended app_jobs.jobs[];
  v_cancelled bigint[];
BEGIN
  -- Before anything is written (get_jobs calls this first, and so refuses the same way).
  PERFORM app_jobs.assert_interval('job_expiry', v_expiry);
  -- Both checks below are index or tiny-table probes: most calls stop here (89 us saved
  -- per get_jobs).
  IF NOT EXISTS (SELECT 1 FROM app_jobs.workers s
                  WHERE app_jobs.alive_until(s.last_heartbeat, s.heartbeat_timeout) < v_now)
     -- The oldest lock, read off jobs_locked_at_idx. (An EXISTS with a range condition
     -- drops the ORDER BY, and its generic plan scanned the whole table.)
     AND coalesce((SELECT e.locked_at FROM app_jobs.jobs e
                    WHERE e.locked_at IS NOT NULL
                    ORDER BY e.locked_at LIMIT 1) >= v_now - v_expiry, true)
  THEN
    RETURN;
  END IF;

  -- Jobs asked to stop whose holder is gone end as cancelled, not retried.
  IF EXISTS (SELECT 1 FROM app_jobs.cancel_requests) THEN
    v_cancelled := ARRAY(SELECT j.id
                           FROM app_jobs.cancel_requests r
                           JOIN app_jobs.jobs j ON j.id = r.job_id
                          WHERE NOT app_jobs.lock_is_held(j.locked_at, j.locked_by,
                                                          v_now - v_expiry)
                            FOR UPDATE OF j SKIP LOCKED);
    PERFORM app_jobs.end_cancelled(
      v_cancelled,
      array_fill('cancelled: its worker stopped before the run ended'::text,
                 ARRAY[cardinality(v_cancelled)]));
  END IF;

  WITH gone AS (
    DELETE FROM app_jobs.workers w
     WHERE w.worker_id IN (SELECT s.worker_id
                             FROM app_jobs.workers s
                            WHERE app_jobs.alive_until(s.last_heartbeat, s.heartbeat_timeout)
                                  < v_now
                              FOR UPDATE SKIP LOCKED)
    RETURNING w.worker_id, w.last_heartbeat
  ), held AS (
    -- The jobs as they are before freed unlocks them (one snapshot for the whole WITH).
    SELECT j.id, j.locked_at, j.locked_by
      FROM app_jobs.jobs j JOIN gone g ON j.locked_by = g.worker_id
     WHERE j.locked_at IS NOT NULL
  ), freed AS (
    UPDATE app_jobs.jobs j
       SET locked_by = NULL,
           locked_at = NULL,
           last_error = format('worker %s stopped heartbeating (last heartbeat %s)',
                               g.worker_id, g.last_heartbeat),
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM gone g, held h
     WHERE j.locked_by = g.worker_id AND j.locked_at IS NOT NULL AND h.id = j.id
    RETURNING j AS job, h.locked_at AS started_at, h.locked_by AS worker_id
  )
  SELECT (SELECT array_agg(g.worker_id) FROM gone g),
         (SELECT array_agg(app_jobs.as_finished(f.job, f.started_at, f.worker_id))
            FROM freed f
           WHERE (f.job).attempts >= (f.job).max_attempts)
    INTO v_dead, v_ended;
  IF v_ended IS NOT NULL THEN
    PERFORM app_jobs.record_history('failed', v_ended);
  END IF;

  IF v_dead IS NOT NULL THEN
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
     WHERE q.locked_by = ANY (v_dead);
  END IF;

  WITH expired AS (
    SELECT e.id, e.locked_at, e.locked_by
      FROM app_jobs.jobs e
     WHERE e.locked_at < v_now - v_expiry
       AND NOT EXISTS (SELECT 1 FROM app_jobs.workers w WHERE w.worker_id = e.locked_by)
     -- ORDER BY keeps the plan on jobs_locked_at_idx: a generic plan with a plain LIMIT
     -- chose a sequential scan of the whole table.
     ORDER BY e.locked_at
     LIMIT 1000
       FOR UPDATE SKIP LOCKED
  ), freed AS (
    UPDATE app_jobs.jobs j
       SET locked_by = NULL,
           locked_at = NULL,
           last_error = format('lock held by %s since %s expired after %s',
                               x.locked_by, x.locked_at, v_expiry),
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM expired x
     WHERE j.id = x.id
    RETURNING j AS job, x.locked_at AS started_at, x.locked_by AS worker_id
  )
  SELECT array_agg(app_jobs.as_finished(f.job, f.started_at, f.worker_id))
    INTO v_ended
    FROM freed f
   WHERE (f.job).attempts >= (f.job).max_attempts;
  IF v_ended IS NOT NULL THEN
    PERFORM app_jobs.record_history('failed', v_ended);
  END IF;
END
$$;

-- Take up to max_jobs runnable jobs for worker_id, in (priority, run_at, id) order, and
-- lock them. A job is runnable when it is unlocked (or its lock is older than job_expiry),
-- due (run_at <= now()), has attempts left, matches task_identifiers (NULL: any; an empty
-- array: none), and its queue (if any) is not held by another worker. At most one job per
-- queue is taken. Each taken job's attempts goes up by one.
--
-- Speed (P2/P3): expired locks are first released through the small index of locked jobs;
-- then candidates are read from jobs_available_idx one priority at a time, walking only the
-- due part of each priority, so dead, locked and future jobs are never visited. Queue rows
-- are read without a lock and row-locked only for a queue this call actually takes.
--
-- Paused queues and tasks (version 2, fix 8) are skipped: their due jobs are walked past
-- like those of tasks a worker does not handle.
--
-- One statement per priority (version 2): the priority's first runnable entry (its head)
-- and its candidates come from one cursor, so from one snapshot. Version 1 read the head
-- in a statement of its own, and a job made runnable with an older run_at (released,
-- rescheduled, enqueued with a past run_at) that committed before the cursor's snapshot
-- was visible to the cursor but below its lower bound: that call skipped it. (The cursor
-- waits for its table lock before it takes its snapshot, which is where such a commit
-- lands: tests/sql/test_schema_v2.py forces it.)
CREATE OR REPLACE FUNCTION app_jobs.get_jobs(
  worker_id text,
  task_identifiers text[] DEFAULT NULL,
  job_expiry interval DEFAULT interval '4 hours',
  max_jobs integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_now timestamptz := now();
  v_expiry interval := coalesce(get_jobs.job_expiry, interval '4 hours');
  v_limit integer := coalesce(get_jobs.max_jobs, 1);
  v_ids bigint[] := '{}';
  v_queues text[] := '{}';
  -- The lowest priority not visited yet (the smallest integer: all of them).
  v_from integer := -2147483648;
  v_priority integer;
  v_cursor refcursor;
  v_candidate record;
  v_queue record;
  -- Paused queues and tasks (version 2): read once per call, from a tiny table.
  v_paused_queues text[] := ARRAY(SELECT p.name FROM app_jobs.pauses p WHERE p.kind = 'queue');
  v_paused_tasks text[] := ARRAY(SELECT p.name FROM app_jobs.pauses p WHERE p.kind = 'task');
BEGIN
  PERFORM app_jobs.assert_worker_id(get_jobs.worker_id);
  PERFORM app_jobs.assert_positive('max_jobs', v_limit);

  -- Also refuses a job_expiry out of range, before anything is written.
  PERFORM app_jobs.recover_jobs(v_expiry);

  <<priorities>>
  LOOP
    -- The head (first runnable entry at v_from or after: its priority is the one taken
    -- now), then that priority's due candidates from the head's run_at on. Completed jobs
    -- leave dead entries at the head of jobs_available_idx until vacuum; the head's scan
    -- steps over them and the candidates' scan starts after them, so they are walked once
    -- per call, not twice (with 200,000 of them, a walk reads about 1,800 index pages: 2-3
    -- ms). A row comparison on (run_at, id) would be exact, but its generic plan sorts the
    -- whole priority instead of reading the index in order.
    --
    -- The plan (generic, EXPLAINed on PostgreSQL 15 and 16): a nested loop whose outer
    -- side is the LIMIT 1 index scan of the head and whose inner side is LockRows over an
    -- index scan of jobs_available_idx with priority = head.priority and run_at between
    -- head.run_at and now(): no sort, so each FETCH reads and row-locks one candidate (a
    -- FOR loop over the query would prefetch and lock ten, taking them from other workers:
    -- P3). The LEFT JOIN gives one row with a NULL id when the priority has no candidate,
    -- so the loop still learns the priority to continue after; no row means no runnable
    -- entry at v_from or after.
    OPEN v_cursor FOR
      SELECT head.priority, c.id, c.queue_name
        FROM (SELECT h.priority, h.run_at
                FROM app_jobs.jobs h
               WHERE h.locked_at IS NULL AND h.attempts < h.max_attempts
                 AND h.priority >= v_from
               ORDER BY h.priority, h.run_at, h.id
               LIMIT 1) AS head
        LEFT JOIN LATERAL (
          SELECT j.id, j.queue_name
            FROM app_jobs.jobs j
           WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
             AND j.priority = head.priority
             AND j.run_at >= head.run_at
             AND j.run_at <= v_now
             AND (get_jobs.task_identifiers IS NULL
                  OR j.task_identifier = ANY (get_jobs.task_identifiers))
             AND NOT (j.task_identifier = ANY (v_paused_tasks))
             AND (j.queue_name IS NULL OR NOT (j.queue_name = ANY (v_paused_queues)))
           ORDER BY j.run_at, j.id
             FOR UPDATE SKIP LOCKED
        ) AS c ON true;
    v_priority := NULL;
    LOOP
      FETCH v_cursor INTO v_candidate;
      EXIT WHEN NOT FOUND;
      v_priority := v_candidate.priority;
      CONTINUE WHEN v_candidate.id IS NULL;

      IF v_candidate.queue_name IS NOT NULL THEN
        CONTINUE WHEN v_candidate.queue_name = ANY (v_queues);

        -- Look first, lock only a queue that looks free (P3).
        SELECT q.locked_at, q.locked_by INTO v_queue
          FROM app_jobs.job_queues q
         WHERE q.queue_name = v_candidate.queue_name;
        IF NOT FOUND THEN
          -- The queue row is missing (job_queues was emptied by hand): rebuild it with
          -- the exact count rather than leave its jobs invisible forever (C8).
          INSERT INTO app_jobs.job_queues (queue_name, job_count)
          SELECT v_candidate.queue_name, count(*)
            FROM app_jobs.jobs j
           WHERE j.queue_name = v_candidate.queue_name
          ON CONFLICT (queue_name) DO NOTHING;
        ELSIF app_jobs.lock_is_held(v_queue.locked_at, v_queue.locked_by, v_now - v_expiry) THEN
          CONTINUE;
        END IF;

        SELECT q.locked_at, q.locked_by INTO v_queue
          FROM app_jobs.job_queues q
         WHERE q.queue_name = v_candidate.queue_name
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        CONTINUE WHEN app_jobs.lock_is_held(v_queue.locked_at, v_queue.locked_by, v_now - v_expiry);

        UPDATE app_jobs.job_queues q
           SET locked_by = get_jobs.worker_id, locked_at = v_now
         WHERE q.queue_name = v_candidate.queue_name;
        v_queues := v_queues || v_candidate.queue_name;
      END IF;

      v_ids := v_ids || v_candidate.id;
      EXIT WHEN cardinality(v_ids) >= v_limit;
    END LOOP;
    CLOSE v_cursor;
    EXIT priorities WHEN v_priority IS NULL
                      OR cardinality(v_ids) >= v_limit
                      OR v_priority = 2147483647;  -- the largest integer: none after it
    v_from := v_priority + 1;
  END LOOP;

  IF cardinality(v_ids) = 0 THEN
    RETURN;
  END IF;

  RETURN QUERY
  WITH taken AS (
    UPDATE app_jobs.jobs j
       SET attempts = j.attempts + 1,
           locked_by = get_jobs.worker_id,
           locked_at = v_now,
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
     WHERE j.id = ANY (v_ids)
    RETURNING j.*
  )
  SELECT * FROM taken t ORDER BY t.priority, t.run_at, t.id;
END
$$;

-- Complete (delete) the listed jobs that worker_id holds and free their queues. Jobs not
-- held by worker_id are left alone (C1). Returns the completed jobs. Version 2: records
-- them in job_history (completed); a cancel request for one goes (the run completed).
CREATE OR REPLACE FUNCTION app_jobs.complete_job_batch(worker_id text, job_ids bigint[])
RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_done app_jobs.jobs[];
BEGIN
  PERFORM app_jobs.assert_worker_id(complete_job_batch.worker_id);
  WITH done AS (
    DELETE FROM app_jobs.jobs j
     WHERE j.id = ANY (complete_job_batch.job_ids)
       AND j.locked_by = complete_job_batch.worker_id
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
     WHERE q.queue_name IN (SELECT d.queue_name FROM done d)
       AND q.locked_by = complete_job_batch.worker_id
  )
  SELECT array_agg(d) INTO v_done FROM done d;
  IF v_done IS NOT NULL THEN
    PERFORM app_jobs.record_history('completed', v_done);
    IF EXISTS (SELECT 1 FROM app_jobs.cancel_requests) THEN
      DELETE FROM app_jobs.cancel_requests r
       WHERE r.job_id IN (SELECT d.id FROM unnest(v_done) d);
    END IF;
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_done);
END
$$;

-- Fail the listed jobs that worker_id holds: record the error (a placeholder when it is
-- NULL, C2), unlock, and push run_at back by exp(min(attempts, 10)) seconds. A job whose
-- attempts are used up stays in the table, visibly failed. error_messages pairs with
-- job_ids element by element (NULL: no messages). Version 2: a job whose attempts are
-- used up is recorded in job_history (failed); one that will be retried keeps the start
-- of its first attempt for its history row (job_first_starts); one whose cancellation was
-- requested ends as cancelled instead, with its error message, and is never retried
-- (fix 9; so also when the reference's fail_job fails it).
CREATE OR REPLACE FUNCTION app_jobs.fail_job_batch(
  worker_id text,
  job_ids bigint[],
  error_messages text[] DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_failed app_jobs.jobs[];
  v_ended app_jobs.jobs[];
  v_cancelled bigint[];
  v_cancelled_errors text[];
BEGIN
  PERFORM app_jobs.assert_worker_id(fail_job_batch.worker_id);
  IF fail_job_batch.error_messages IS NOT NULL
     AND cardinality(fail_job_batch.error_messages) <> coalesce(cardinality(fail_job_batch.job_ids), 0)
  THEN
    RAISE EXCEPTION 'fail_job_batch: error_messages has % elements but job_ids has %',
      cardinality(fail_job_batch.error_messages), coalesce(cardinality(fail_job_batch.job_ids), 0)
      USING ERRCODE = '22023', COLUMN = 'error_messages',
            HINT = 'Pass one message per job id, or NULL.';
  END IF;

  IF EXISTS (SELECT 1 FROM app_jobs.cancel_requests) THEN
    SELECT array_agg(f.id),
           array_agg(coalesce(f.error_message, 'cancelled: the run ended without an error message'))
      INTO v_cancelled, v_cancelled_errors
      FROM unnest(fail_job_batch.job_ids, fail_job_batch.error_messages) AS f(id, error_message)
     WHERE EXISTS (SELECT 1
                     FROM app_jobs.cancel_requests r
                     JOIN app_jobs.jobs j ON j.id = r.job_id
                    WHERE r.job_id = f.id AND j.locked_by = fail_job_batch.worker_id);
    IF v_cancelled IS NOT NULL THEN
      -- Deleted: the statement below no longer finds them.
      RETURN QUERY SELECT * FROM app_jobs.end_cancelled(v_cancelled, v_cancelled_errors);
    END IF;
  END IF;

  WITH held AS (
    SELECT j.id, j.locked_at, j.run_at
      FROM app_jobs.jobs j
     WHERE j.id = ANY (fail_job_batch.job_ids)
       AND j.locked_by = fail_job_batch.worker_id
       FOR UPDATE
  ), failed AS (
    UPDATE app_jobs.jobs j
       SET last_error = coalesce(f.error_message, 'job failed without an error message'),
           locked_by = NULL,
           locked_at = NULL,
           run_at = GREATEST(now(), j.run_at)
                    + (exp(LEAST(j.attempts, 10))::text || ' seconds')::interval,
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM unnest(fail_job_batch.job_ids, fail_job_batch.error_messages) AS f(id, error_message),
           held h
     WHERE j.id = f.id AND h.id = f.id
    RETURNING j AS job, h.locked_at AS started_at, h.run_at AS due_at
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
     WHERE q.queue_name IN (SELECT (f.job).queue_name FROM failed f)
       AND q.locked_by = fail_job_batch.worker_id
  ), retried AS (
    INSERT INTO app_jobs.job_first_starts (job_id, started_at)
    SELECT (f.job).id, f.started_at
      FROM failed f
     WHERE (f.job).attempts < (f.job).max_attempts AND f.started_at IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING
  )
  SELECT array_agg(f.job),
         array_agg(app_jobs.as_finished(f.job, f.started_at, fail_job_batch.worker_id,
                                        f.due_at))
           FILTER (WHERE (f.job).attempts >= (f.job).max_attempts)
    INTO v_failed, v_ended
    FROM failed f;
  IF v_ended IS NOT NULL THEN
    PERFORM app_jobs.record_history('failed', v_ended);
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_failed);
END
$$;

-- Fail the listed jobs that worker_id holds for good, whatever attempts they have left
-- (fix 10): their payload cannot be the arguments of their typed task, so every retry
-- would fail the same way. Their attempts are used up (as permanently_fail_jobs does),
-- then they fail as in fail_job_batch: recorded in job_history (failed), or cancelled if
-- that was requested. Returns the failed jobs.
CREATE FUNCTION app_jobs.fail_jobs_for_good(
  worker_id text,
  job_ids bigint[],
  error_messages text[] DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  PERFORM app_jobs.assert_worker_id(fail_jobs_for_good.worker_id);
  UPDATE app_jobs.jobs j
     SET attempts = j.max_attempts
   WHERE j.id = ANY (fail_jobs_for_good.job_ids)
     AND j.locked_by = fail_jobs_for_good.worker_id
     AND j.attempts < j.max_attempts;
  RETURN QUERY SELECT * FROM app_jobs.fail_job_batch(fail_jobs_for_good.worker_id,
                                                     fail_jobs_for_good.job_ids,
                                                     fail_jobs_for_good.error_messages);
END
$$;

-- Retry the listed jobs that worker_id holds at times of the worker's choosing (fix 11),
-- each paired with its run_at, error message and refund flag. Refund false: the run
-- failed and counts as an attempt (a task's own backoff, or the handler asked to be
-- retried at a time), as fail_job_batch does but for the run_at: a job whose attempts
-- are used up fails for good, one whose cancellation was requested ends as cancelled.
-- Refund true: the run is snoozed (the handler asked to run later): the attempt is given
-- back and the error, if any, recorded, unless its cancellation was requested (then it
-- ends as cancelled). Returns the jobs it acted on (not those worker_id did not hold), as
-- each was failed, cancelled or snoozed.
CREATE FUNCTION app_jobs.retry_jobs_at(
  worker_id text,
  job_ids bigint[],
  run_ats timestamptz[],
  error_messages text[] DEFAULT NULL,
  refunds boolean[] DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_failed bigint[];
  v_failed_errors text[];
  v_snoozed bigint[];
BEGIN
  PERFORM app_jobs.assert_worker_id(retry_jobs_at.worker_id);
  IF cardinality(retry_jobs_at.run_ats) IS DISTINCT FROM cardinality(retry_jobs_at.job_ids)
     OR (retry_jobs_at.error_messages IS NOT NULL
         AND cardinality(retry_jobs_at.error_messages) <> cardinality(retry_jobs_at.job_ids))
     OR (retry_jobs_at.refunds IS NOT NULL
         AND cardinality(retry_jobs_at.refunds) <> cardinality(retry_jobs_at.job_ids))
  THEN
    RAISE EXCEPTION 'retry_jobs_at: run_ats, error_messages and refunds must have one element per job id (%)',
      coalesce(cardinality(retry_jobs_at.job_ids), 0)
      USING ERRCODE = '22023', COLUMN = 'run_ats';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(retry_jobs_at.run_ats) AS r(at)
              WHERE r.at IS NULL OR NOT isfinite(r.at)) THEN
    RAISE EXCEPTION 'retry_jobs_at: every run_at must be a finite time'
      USING ERRCODE = '22023', COLUMN = 'run_ats';
  END IF;

  SELECT array_agg(f.id) FILTER (WHERE NOT coalesce(f.refund, false)),
         array_agg(f.error_message) FILTER (WHERE NOT coalesce(f.refund, false)),
         array_agg(f.id) FILTER (WHERE coalesce(f.refund, false))
    INTO v_failed, v_failed_errors, v_snoozed
    FROM unnest(retry_jobs_at.job_ids, retry_jobs_at.error_messages, retry_jobs_at.refunds)
         AS f(id, error_message, refund);

  IF v_failed IS NOT NULL THEN
    -- fail_job_batch's rules (history, cancel requests, first starts), then the run_at.
    RETURN QUERY
    SELECT * FROM app_jobs.fail_job_batch(retry_jobs_at.worker_id, v_failed, v_failed_errors);
    UPDATE app_jobs.jobs j
       SET run_at = r.at
      FROM unnest(retry_jobs_at.job_ids, retry_jobs_at.run_ats) AS r(id, at)
     WHERE j.id = r.id AND j.id = ANY (v_failed)
       AND j.locked_at IS NULL AND j.attempts < j.max_attempts;
  END IF;

  IF v_snoozed IS NOT NULL THEN
    IF EXISTS (SELECT 1 FROM app_jobs.cancel_requests) THEN
      RETURN QUERY
      SELECT * FROM app_jobs.end_cancelled(
        ARRAY(SELECT r.job_id FROM app_jobs.cancel_requests r
               JOIN app_jobs.jobs j ON j.id = r.job_id
               WHERE r.job_id = ANY (v_snoozed) AND j.locked_by = retry_jobs_at.worker_id),
        NULL);
    END IF;
    RETURN QUERY
    WITH held AS (
      SELECT j.id, j.locked_at, j.queue_name
        FROM app_jobs.jobs j
       WHERE j.id = ANY (v_snoozed) AND j.locked_by = retry_jobs_at.worker_id
         FOR UPDATE
    ), snoozed AS (
      UPDATE app_jobs.jobs j
         SET locked_by = NULL,
             locked_at = NULL,
             attempts = GREATEST(j.attempts - 1, 0),
             run_at = r.at,
             last_error = coalesce(r.error_message, j.last_error),
             updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
        FROM unnest(retry_jobs_at.job_ids, retry_jobs_at.run_ats, retry_jobs_at.error_messages)
             AS r(id, at, error_message),
             held h
       WHERE j.id = r.id AND h.id = r.id
      RETURNING j.*
    ), freed AS (
      UPDATE app_jobs.job_queues q
         SET locked_by = NULL, locked_at = NULL
       WHERE q.queue_name IN (SELECT h.queue_name FROM held h)
         AND q.locked_by = retry_jobs_at.worker_id
    ), started AS (
      INSERT INTO app_jobs.job_first_starts (job_id, started_at)
      SELECT h.id, h.locked_at FROM held h WHERE h.locked_at IS NOT NULL
      ON CONFLICT (job_id) DO NOTHING
    )
    SELECT * FROM snoozed;
  END IF;
END
$$;

-- Give back the jobs and queues worker_id holds (all, or all but keep_job_ids), refunding
-- the interrupted attempt: on shutdown, at start after a crash, or after a reconnect.
-- Version 2: a job whose cancellation was requested ends as cancelled instead of waiting
-- again (fix 9).
CREATE OR REPLACE FUNCTION app_jobs.release_jobs(worker_id text, keep_job_ids bigint[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_cancelled bigint[];
BEGIN
  PERFORM app_jobs.assert_worker_id(release_jobs.worker_id);

  IF EXISTS (SELECT 1 FROM app_jobs.cancel_requests r
              WHERE r.worker_id = release_jobs.worker_id) THEN
    v_cancelled := ARRAY(SELECT j.id
                           FROM app_jobs.cancel_requests r
                           JOIN app_jobs.jobs j ON j.id = r.job_id
                          WHERE r.worker_id = release_jobs.worker_id
                            AND j.locked_by = release_jobs.worker_id
                            AND j.locked_at IS NOT NULL
                            AND NOT (j.id = ANY (coalesce(release_jobs.keep_job_ids, '{}'))));
    PERFORM app_jobs.end_cancelled(
      v_cancelled,
      array_fill('cancelled: its worker gave it back before the run ended'::text,
                 ARRAY[cardinality(v_cancelled)]));
  END IF;

  UPDATE app_jobs.jobs j
     SET locked_at = NULL, locked_by = NULL, attempts = GREATEST(j.attempts - 1, 0),
         updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
   WHERE j.locked_by = release_jobs.worker_id
     AND j.locked_at IS NOT NULL  -- lets the planner use jobs_locked_at_idx
     AND NOT (j.id = ANY (coalesce(release_jobs.keep_job_ids, '{}')));

  UPDATE app_jobs.job_queues q
     SET locked_at = NULL, locked_by = NULL
   WHERE q.locked_by = release_jobs.worker_id
     AND NOT EXISTS (SELECT 1 FROM app_jobs.jobs j
                      WHERE j.queue_name = q.queue_name
                        AND j.id = ANY (coalesce(release_jobs.keep_job_ids, '{}')));

  -- A worker that gives back all its jobs is leaving (or starting afresh): it is no
  -- longer registered until its next heartbeat. With keep_job_ids (after a reconnect,
  -- to give back jobs it was handed but never received) it stays.
  IF release_jobs.keep_job_ids IS NULL THEN
    DELETE FROM app_jobs.workers w WHERE w.worker_id = release_jobs.worker_id;
  END IF;

  -- Released jobs are runnable now; wake the workers (P5).
  PERFORM pg_notify('jobs:insert', '');
END
$$;

-- A worker's cycle in one statement, so in one round trip and one transaction: record the
-- jobs it finished (complete_job_batch, fail_job_batch), then take up to max_jobs more
-- (get_jobs; none when max_jobs is 0). completed and failed count the results recorded (a
-- job this worker no longer held is not). taken is in get_jobs' order. When fewer jobs than
-- asked for were taken, next_run_at is next_run_at(task_identifiers), so an idle worker
-- learns how long to sleep without another round trip.
--
-- Speed: the worker sent BEGIN, the statements and COMMIT in one psycopg pipeline before;
-- one statement costs its client 83 us of CPU per cycle against 245 us, and no round trip
-- for next_run_at.
CREATE OR REPLACE FUNCTION app_jobs.worker_cycle(
  worker_id text,
  completed_ids bigint[] DEFAULT NULL,
  failed_ids bigint[] DEFAULT NULL,
  error_messages text[] DEFAULT NULL,
  task_identifiers text[] DEFAULT NULL,
  job_expiry interval DEFAULT interval '4 hours',
  max_jobs integer DEFAULT 0,
  OUT completed integer,
  OUT failed integer,
  OUT taken app_jobs.jobs[],
  OUT next_run_at timestamptz,
  OUT now timestamptz
)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_limit integer := coalesce(worker_cycle.max_jobs, 0);
BEGIN
  PERFORM app_jobs.assert_worker_id(worker_cycle.worker_id);
  IF v_limit < 0 THEN
    RAISE EXCEPTION 'max_jobs must be at least 0, got %', v_limit
      USING ERRCODE = '22023', COLUMN = 'max_jobs';
  END IF;
  -- Up front, also when no job is taken this time.
  PERFORM app_jobs.assert_interval('job_expiry',
                                   coalesce(worker_cycle.job_expiry, interval '4 hours'));
  completed := 0;
  failed := 0;
  now := pg_catalog.now();
  IF cardinality(worker_cycle.completed_ids) > 0 THEN
    SELECT count(*) INTO completed
      FROM app_jobs.complete_job_batch(worker_cycle.worker_id, worker_cycle.completed_ids);
  END IF;
  IF cardinality(worker_cycle.failed_ids) > 0 THEN
    SELECT count(*) INTO failed
      FROM app_jobs.fail_job_batch(worker_cycle.worker_id, worker_cycle.failed_ids,
                                   worker_cycle.error_messages);
  END IF;
  IF v_limit > 0 THEN
    SELECT array_agg(t ORDER BY t.priority, t.run_at, t.id) INTO taken
      FROM app_jobs.get_jobs(worker_cycle.worker_id, worker_cycle.task_identifiers,
                             worker_cycle.job_expiry, v_limit) t;
  END IF;
  IF coalesce(cardinality(taken), 0) < v_limit THEN
    next_run_at := app_jobs.next_run_at(worker_cycle.task_identifiers);
  END IF;
END
$$;

-- The earliest time a job (of these tasks) could be taken, so that an idle worker knows how
-- long to sleep. Version 2: jobs of paused queues and tasks do not count (a worker would
-- otherwise wake at once, again and again, for jobs it may not take).
CREATE OR REPLACE FUNCTION app_jobs.next_run_at(task_identifiers text[] DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_priority integer;
  v_first_run_at timestamptz;
  v_run_at timestamptz;
  v_paused_queues text[] := ARRAY(SELECT p.name FROM app_jobs.pauses p WHERE p.kind = 'queue');
  v_paused_tasks text[] := ARRAY(SELECT p.name FROM app_jobs.pauses p WHERE p.kind = 'task');
  v_filtered boolean := next_run_at.task_identifiers IS NOT NULL
                        OR cardinality(v_paused_queues) > 0 OR cardinality(v_paused_tasks) > 0;
  -- A silent worker's jobs become takeable when its heartbeat timeout runs out.
  v_earliest timestamptz := (SELECT min(app_jobs.alive_until(w.last_heartbeat,
                                                               w.heartbeat_timeout))
                               FROM app_jobs.workers w
                              WHERE EXISTS (SELECT 1 FROM app_jobs.jobs j
                                             WHERE j.locked_by = w.worker_id
                                               AND j.locked_at IS NOT NULL));
BEGIN
  -- As in get_jobs: the first entry of each priority, then (with a task filter or pauses)
  -- a search from its run_at on, so the dead entries of unvacuumed jobs are walked only
  -- once.
  SELECT j.priority, j.run_at INTO v_priority, v_first_run_at
    FROM app_jobs.jobs j
   WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
   ORDER BY j.priority, j.run_at, j.id
   LIMIT 1;
  WHILE v_priority IS NOT NULL LOOP
    IF NOT v_filtered THEN
      v_run_at := v_first_run_at;
    ELSE
      SELECT j.run_at INTO v_run_at
        FROM app_jobs.jobs j
       WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
         AND j.priority = v_priority
         AND j.run_at >= v_first_run_at
         AND (next_run_at.task_identifiers IS NULL
              OR j.task_identifier = ANY (next_run_at.task_identifiers))
         AND NOT (j.task_identifier = ANY (v_paused_tasks))
         AND (j.queue_name IS NULL OR NOT (j.queue_name = ANY (v_paused_queues)))
       ORDER BY j.run_at
       LIMIT 1;
    END IF;
    v_earliest := LEAST(v_earliest, v_run_at);
    SELECT j.priority, j.run_at INTO v_priority, v_first_run_at
      FROM app_jobs.jobs j
     WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
       AND j.priority > v_priority
     ORDER BY j.priority, j.run_at, j.id
     LIMIT 1;
  END LOOP;
  RETURN v_earliest;
END
$$;

--------------------------------------------------------------------------------------------
-- Administration: any job no worker holds. A job counts as held while its worker is alive
-- (heartbeating), or, for a worker that never heartbeats, until its lock is older than
-- job_expiry; force = true acts on held jobs too. A job_expiry out of range is refused
-- first, whatever the jobs.
--------------------------------------------------------------------------------------------

-- Remove the listed jobs that no live worker holds (all of them with force), free their
-- queues, drop their cancel requests, and record them in job_history with outcome: what
-- complete_jobs and discard_jobs do (version 2). Returns the removed jobs.
CREATE FUNCTION app_jobs.remove_jobs(
  outcome text,
  job_ids bigint[],
  job_expiry interval,
  force boolean
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_expiry interval := coalesce(remove_jobs.job_expiry, interval '4 hours');
  v_done app_jobs.jobs[];
BEGIN
  PERFORM app_jobs.assert_interval('job_expiry', v_expiry);
  WITH done AS (
    DELETE FROM app_jobs.jobs j
     WHERE j.id = ANY (remove_jobs.job_ids)
       AND (remove_jobs.force IS TRUE
            OR NOT app_jobs.lock_is_held(j.locked_at, j.locked_by, now() - v_expiry))
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
      FROM done d
     WHERE q.queue_name = d.queue_name AND q.locked_by = d.locked_by
  ), dropped AS (
    DELETE FROM app_jobs.cancel_requests r WHERE r.job_id IN (SELECT d.id FROM done d)
  )
  SELECT array_agg(d) INTO v_done FROM done d;
  IF v_done IS NOT NULL THEN
    PERFORM app_jobs.record_history(remove_jobs.outcome, v_done);
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_done);
END
$$;

-- C9: the expiry is a parameter (the reference hard-coded 4 hours) and queues are freed.
-- Version 2: the jobs are recorded in job_history (completed), with the worker that held
-- them, if any (a stale or forced lock).
CREATE OR REPLACE FUNCTION app_jobs.complete_jobs(
  job_ids bigint[],
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
  SELECT * FROM app_jobs.remove_jobs('completed', complete_jobs.job_ids,
                                     complete_jobs.job_expiry, complete_jobs.force);
$$;

-- Version 2: delete the listed jobs without running them, as complete_jobs does, but
-- record them as discarded (pgjobs jobs delete).
CREATE FUNCTION app_jobs.discard_jobs(
  job_ids bigint[],
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
  SELECT * FROM app_jobs.remove_jobs('discarded', discard_jobs.job_ids,
                                     discard_jobs.job_expiry, discard_jobs.force);
$$;

-- C9: the stale lock is cleared too, so a later release_jobs cannot revive the job.
-- Version 2: the jobs are recorded in job_history (failed), unless they had already failed
-- for good; a cancel request for one goes (it is failed instead).
CREATE OR REPLACE FUNCTION app_jobs.permanently_fail_jobs(
  job_ids bigint[],
  error_message text DEFAULT NULL,
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_expiry interval := coalesce(permanently_fail_jobs.job_expiry, interval '4 hours');
  v_failed app_jobs.jobs[];
  v_ended app_jobs.jobs[];
BEGIN
  PERFORM app_jobs.assert_interval('job_expiry', v_expiry);
  WITH stale AS (
    SELECT j.id, j.queue_name, j.locked_at, j.locked_by, j.attempts < j.max_attempts AS ends
      FROM app_jobs.jobs j
     WHERE j.id = ANY (permanently_fail_jobs.job_ids)
       AND (permanently_fail_jobs.force IS TRUE
            OR NOT app_jobs.lock_is_held(j.locked_at, j.locked_by, now() - v_expiry))
       FOR UPDATE
  ), failed AS (
    UPDATE app_jobs.jobs j
       SET last_error = coalesce(permanently_fail_jobs.error_message, 'Manually marked as failed'),
           attempts = j.max_attempts,
           locked_by = NULL,
           locked_at = NULL,
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM stale s
     WHERE j.id = s.id
    RETURNING j AS job, s.locked_at AS started_at, s.locked_by AS worker_id, s.ends
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
      FROM stale s
     WHERE q.queue_name = s.queue_name AND q.locked_by = s.locked_by
  ), dropped AS (
    DELETE FROM app_jobs.cancel_requests r WHERE r.job_id IN (SELECT s.id FROM stale s)
  )
  -- A job that had already failed for good was recorded then.
  SELECT array_agg(f.job),
         array_agg(app_jobs.as_finished(f.job, f.started_at, f.worker_id)) FILTER (WHERE f.ends)
    INTO v_failed, v_ended
    FROM failed f;
  IF v_ended IS NOT NULL THEN
    PERFORM app_jobs.record_history('failed', v_ended);
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_failed);
END
$$;

-- Change run_at, priority, attempts or max_attempts (NULL: keep) of jobs that are not
-- running. C9: the expiry is a parameter; stale locks are cleared and queues freed.
CREATE OR REPLACE FUNCTION app_jobs.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT NULL,
  attempts integer DEFAULT NULL,
  max_attempts integer DEFAULT NULL,
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  PERFORM app_jobs.assert_interval('job_expiry',
                                   coalesce(reschedule_jobs.job_expiry, interval '4 hours'));
  RETURN QUERY
  WITH stale AS (
    SELECT j.id, j.queue_name, j.locked_by
      FROM app_jobs.jobs j
     WHERE j.id = ANY (reschedule_jobs.job_ids)
       AND (reschedule_jobs.force IS TRUE
            OR NOT app_jobs.lock_is_held(j.locked_at, j.locked_by,
                                         now() - coalesce(reschedule_jobs.job_expiry, interval '4 hours')))
       FOR UPDATE
  ), changed AS (
    UPDATE app_jobs.jobs j
       SET run_at = coalesce(reschedule_jobs.run_at, j.run_at),
           priority = coalesce(reschedule_jobs.priority, j.priority),
           attempts = coalesce(reschedule_jobs.attempts, j.attempts),
           max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
           locked_by = NULL,
           locked_at = NULL,
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM stale s
     WHERE j.id = s.id
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
      FROM stale s
     WHERE q.queue_name = s.queue_name AND q.locked_by = s.locked_by
  ), dropped AS (
    -- Version 2: rescheduling a held job (force) withdraws a request to cancel it.
    DELETE FROM app_jobs.cancel_requests r WHERE r.job_id IN (SELECT s.id FROM stale s)
  )
  SELECT * FROM changed;

  -- Rescheduled jobs may be due now; wake the workers (P5).
  PERFORM pg_notify('jobs:insert', '');
END
$$;

--------------------------------------------------------------------------------------------
-- Scheduled jobs
--------------------------------------------------------------------------------------------

-- Claim up to max_jobs schedules for worker_id, as leases that end after lease unless
-- renewed with renew_scheduled_jobs (C7). An unclaimed schedule, or one whose lease has
-- ended and that another worker held, can be claimed. (A worker does not re-claim its own
-- lapsed claims: the reference Node scheduler never renews, and re-claiming would give it
-- a second timer for a schedule it is still running.) The lease is refused unless positive
-- and at most 365000 days: a lease of 0 has lapsed before its holder sees it.
CREATE OR REPLACE FUNCTION app_jobs.get_scheduled_jobs(
  worker_id text,
  task_identifiers text[] DEFAULT NULL,
  lease interval DEFAULT interval '5 minutes',
  max_jobs integer DEFAULT 1
) RETURNS SETOF app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_lease interval := coalesce(get_scheduled_jobs.lease, interval '5 minutes');
  v_limit integer := coalesce(get_scheduled_jobs.max_jobs, 1);
BEGIN
  PERFORM app_jobs.assert_worker_id(get_scheduled_jobs.worker_id);
  PERFORM app_jobs.assert_positive('max_jobs', v_limit);
  PERFORM app_jobs.assert_interval('lease', v_lease);

  RETURN QUERY
  WITH claimable AS (
    SELECT s.id
      FROM app_jobs.scheduled_jobs s
     WHERE (s.locked_at IS NULL
            OR (coalesce(s.lease_expires_at, s.locked_at + interval '5 minutes') < now()
                AND s.locked_by IS DISTINCT FROM get_scheduled_jobs.worker_id))
       AND (get_scheduled_jobs.task_identifiers IS NULL
            OR s.task_identifier = ANY (get_scheduled_jobs.task_identifiers))
     ORDER BY s.priority, s.id
     LIMIT v_limit
       FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE app_jobs.scheduled_jobs s
       SET locked_by = get_scheduled_jobs.worker_id,
           locked_at = now(),
           lease_expires_at = now() + v_lease
      FROM claimable c
     WHERE s.id = c.id
    RETURNING s.*
  )
  SELECT * FROM claimed c ORDER BY c.priority, c.id;
END
$$;

-- Extend worker_id's leases (all of them, or those in ids) by lease from now. Returns the
-- schedules still held, with their current definition; a schedule missing from the result
-- was lost (deleted, replaced, or taken over after the lease ended). The lease is checked
-- as get_scheduled_jobs checks it.
CREATE OR REPLACE FUNCTION app_jobs.renew_scheduled_jobs(
  worker_id text,
  ids bigint[] DEFAULT NULL,
  lease interval DEFAULT interval '5 minutes'
) RETURNS SETOF app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_lease interval := coalesce(renew_scheduled_jobs.lease, interval '5 minutes');
BEGIN
  PERFORM app_jobs.assert_worker_id(renew_scheduled_jobs.worker_id);
  PERFORM app_jobs.assert_interval('lease', v_lease);
  RETURN QUERY
  UPDATE app_jobs.scheduled_jobs s
     SET locked_at = now(),
         lease_expires_at = now() + v_lease
   WHERE s.locked_by = renew_scheduled_jobs.worker_id
     AND (renew_scheduled_jobs.ids IS NULL OR s.id = ANY (renew_scheduled_jobs.ids))
  RETURNING s.*;
END
$$;

-- Create the job for one fire of a schedule, or raise ALREADY_SCHEDULED when the job of
-- the previous fire is still pending or running (fresher than job_expiry), or when this
-- fire already produced a job (fire_time at or before last_scheduled).
-- C6: the schedule row is locked, so concurrent calls never create two jobs; a previous
-- job whose attempts are used up does not block the schedule; a job key on the schedule
-- goes through add_job's key rules instead of failing with a unique violation. A missing
-- schedule id gives the NULL row (the reference Node scheduler relies on it).
--
-- Version 1 also took a call without fire_time within 500 ms of the last fire for the
-- same fire, and refused it even when that fire's job had already finished. A wall-clock
-- window is a guess (the reference creates the job): only an explicit fire_time identifies
-- a fire now. A call without one is refused only while the previous job is pending or
-- running, as in the reference. An infinite fire_time is refused: recorded as the last
-- fire, 'infinity' would refuse every later fire of the schedule.
CREATE OR REPLACE FUNCTION app_jobs.run_scheduled_job(
  id bigint,
  job_expiry interval DEFAULT interval '1 hours',
  fire_time timestamptz DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_expiry interval := coalesce(run_scheduled_job.job_expiry, interval '1 hours');
  v_schedule app_jobs.scheduled_jobs;
  v_previous app_jobs.jobs;
  v_job app_jobs.jobs;
BEGIN
  PERFORM app_jobs.assert_interval('job_expiry', v_expiry);
  IF NOT isfinite(run_scheduled_job.fire_time) THEN
    RAISE EXCEPTION 'fire_time must be a finite timestamp, got %', run_scheduled_job.fire_time
      USING ERRCODE = '22023', COLUMN = 'fire_time';
  END IF;

  SELECT * INTO v_schedule
    FROM app_jobs.scheduled_jobs s
   WHERE s.id = run_scheduled_job.id
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN v_job;
  END IF;

  IF run_scheduled_job.fire_time IS NOT NULL
     AND v_schedule.last_scheduled >= run_scheduled_job.fire_time
  THEN
    RAISE EXCEPTION 'ALREADY_SCHEDULED'
      USING DETAIL = format('scheduled job %s already fired at %s', v_schedule.id,
                            v_schedule.last_scheduled),
            CONSTRAINT = 'scheduled_jobs_already_scheduled';
  END IF;

  IF v_schedule.last_scheduled_id IS NOT NULL THEN
    SELECT * INTO v_previous FROM app_jobs.jobs j WHERE j.id = v_schedule.last_scheduled_id;
    IF FOUND
       AND ((v_previous.locked_at IS NULL AND v_previous.attempts < v_previous.max_attempts)
            OR v_previous.locked_at >= now() - v_expiry)
    THEN
      RAISE EXCEPTION 'ALREADY_SCHEDULED'
        USING DETAIL = format('job %s of scheduled job %s has not finished yet',
                              v_previous.id, v_schedule.id),
              CONSTRAINT = 'scheduled_jobs_already_scheduled';
    END IF;
  END IF;

  v_job := app_jobs.add_job(v_schedule.database_id, v_schedule.task_identifier,
                            v_schedule.payload, v_schedule.key, v_schedule.queue_name, NULL,
                            v_schedule.max_attempts, v_schedule.priority);

  UPDATE app_jobs.scheduled_jobs s
     SET last_scheduled = coalesce(run_scheduled_job.fire_time, now()),
         last_scheduled_id = v_job.id
   WHERE s.id = v_schedule.id;

  RETURN v_job;
END
$$;

--------------------------------------------------------------------------------------------
-- Trace contexts (fix 12)
--------------------------------------------------------------------------------------------

-- The trace context (W3C traceparent, and what else the enqueuing process's propagators
-- write: tracestate, baggage) of the span that enqueued a job, for the span of its runs to
-- continue the trace (sqla_pgjobs.tracing). Written by set_trace_contexts in the enqueuing
-- statement, only for jobs enqueued while tracing was on and a span was current; a job
-- without a row (a trigger's, raw SQL's) starts a trace of its own. A row stays while its
-- job is in jobs or job_history (the dashboard shows the trace of finished jobs too), and
-- prune_job_history deletes it after both. A table of its own, keyed by job id: no
-- function that finishes jobs has to touch it, and jobs' row type is unchanged.
CREATE TABLE app_jobs.job_trace_contexts (
  job_id bigint NOT NULL,
  context jsonb NOT NULL,
  CONSTRAINT job_trace_contexts_pkey PRIMARY KEY (job_id),
  -- A traceparent is 55 characters and a tracestate at most 512: 4 KB leaves room for
  -- baggage and bounds what an enqueuing role can store per job.
  CONSTRAINT job_trace_contexts_context_check
    CHECK (jsonb_typeof(context) = 'object' AND octet_length(context::text) <= 4096)
);

-- Store context as the trace context of the listed jobs that are waiting (not locked:
-- the context of a job already running is not changed); a job given again by a later
-- enqueue (the same job_key) gets the later context. NULL job_ids store nothing.
-- Returns how many jobs got the context.
CREATE FUNCTION app_jobs.set_trace_contexts(job_ids bigint[], context jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_stored integer;
BEGIN
  IF set_trace_contexts.context IS NULL
     OR jsonb_typeof(set_trace_contexts.context) <> 'object'
     OR octet_length(set_trace_contexts.context::text) > 4096
  THEN
    RAISE EXCEPTION 'context must be a JSON object of at most 4096 bytes, got %',
                    left(quote_nullable(set_trace_contexts.context::text), 100)
      USING ERRCODE = '22023', COLUMN = 'context';
  END IF;
  INSERT INTO app_jobs.job_trace_contexts AS t (job_id, context)
  SELECT j.id, set_trace_contexts.context
    FROM app_jobs.jobs j
   WHERE j.id = ANY (set_trace_contexts.job_ids) AND j.locked_at IS NULL
  ON CONFLICT (job_id) DO UPDATE SET context = excluded.context;
  GET DIAGNOSTICS v_stored = ROW_COUNT;
  RETURN v_stored;
END
$$;

-- The stored trace contexts of the listed jobs (jobs without one have no row).
CREATE FUNCTION app_jobs.trace_contexts(job_ids bigint[])
RETURNS TABLE (job_id bigint, context jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.job_id, t.context
    FROM app_jobs.job_trace_contexts t
   WHERE t.job_id = ANY (trace_contexts.job_ids)
$$;

--------------------------------------------------------------------------------------------
-- Privileges
--------------------------------------------------------------------------------------------

-- The replaced functions keep their privileges (CREATE OR REPLACE does not touch them).
-- The new helper is internal: only the schema's SECURITY DEFINER functions call it, with
-- the owner's rights, so no access level needs it and PUBLIC gets nothing.
REVOKE ALL ON FUNCTION app_jobs.assert_interval(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.as_finished(app_jobs.jobs, timestamptz, text, timestamptz)
  FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.record_history(text, app_jobs.jobs[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.remove_jobs(text, bigint[], interval, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.discard_jobs(bigint[], interval, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.set_history_retention(text, interval, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.prune_job_history(integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.claim_maintenance(text, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.set_paused(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.pause_queue(text), app_jobs.resume_queue(text),
                       app_jobs.pause_task(text), app_jobs.resume_task(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_jobs.end_cancelled(bigint[], text[]),
                       app_jobs.cancel_jobs(bigint[], interval),
                       app_jobs.cancel_requested_jobs(text),
                       app_jobs.fail_jobs_for_good(text, bigint[], text[]),
                       app_jobs.retry_jobs_at(text, bigint[], timestamptz[], text[], boolean[]),
                       app_jobs.set_trace_contexts(bigint[], jsonb),
                       app_jobs.trace_contexts(bigint[])
  FROM PUBLIC;
REVOKE ALL ON app_jobs.job_history, app_jobs.history_retention, app_jobs.job_first_starts,
              app_jobs.maintenance, app_jobs.pauses, app_jobs.cancel_requests,
              app_jobs.job_trace_contexts
  FROM PUBLIC;

-- The operator level gains alive_until (fix 6), set_history_retention, discard_jobs, the
-- pause and resume functions (fix 8) and cancel_jobs (fix 9), and reads the new tables;
-- the worker level gains prune_job_history and claim_maintenance (fix 7: workers prune,
-- one at a time), cancel_requested_jobs (fix 9), fail_jobs_for_good (fix 10) and
-- retry_jobs_at (fix 11) and trace_contexts (fix 12); the enqueue level gains
-- set_trace_contexts (fix 12); the new read level (fix 13) holds alive_until and reads
-- the tables, as operator does. grant_access lists them from now on, and the roles that
-- already hold a level get them now: those that can execute add_job hold the enqueue
-- level, complete_job_batch the worker level, complete_jobs the operator level.
CREATE OR REPLACE FUNCTION app_jobs.access_functions(access text) RETURNS SETOF regprocedure
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- read is rank 0: its functions (rank 0) belong to read and operator only, and the
  -- levels from enqueue up each contain the ones below them, down to rank 1.
  v_levels text[] := ARRAY['read', 'enqueue', 'worker', 'operator'];
  v_rank integer := array_position(v_levels, access_functions.access) - 1;
BEGIN
  IF v_rank IS NULL THEN
    RAISE EXCEPTION 'access % is not one of read, enqueue, worker, operator', quote_nullable(access)
      USING ERRCODE = '22023', COLUMN = 'access';
  END IF;
  RETURN QUERY
  SELECT p.oid::regprocedure
    FROM pg_proc p
    JOIN (VALUES
      ('add_job', 1), ('add_jobs', 1), ('add_scheduled_job', 1),
      ('tg_add_job_with_row_id', 1), ('tg_add_job_with_row', 1),
      ('tg_add_job_with_fields', 1), ('trigger_job_with_fields', 1), ('tg_add_job', 1),
      ('set_trace_contexts', 1),
      ('get_job', 2), ('get_jobs', 2), ('complete_job', 2), ('complete_job_batch', 2),
      ('fail_job', 2), ('fail_job_batch', 2), ('release_jobs', 2),
      ('heartbeat', 2), ('next_run_at', 2), ('recover_jobs', 2), ('worker_cycle', 2),
      ('get_scheduled_job', 2), ('get_scheduled_jobs', 2), ('renew_scheduled_jobs', 2),
      ('release_scheduled_jobs', 2), ('run_scheduled_job', 2),
      ('prune_job_history', 2), ('claim_maintenance', 2), ('cancel_requested_jobs', 2),
      ('fail_jobs_for_good', 2), ('retry_jobs_at', 2), ('trace_contexts', 2),
      ('complete_jobs', 3), ('permanently_fail_jobs', 3), ('reschedule_jobs', 3),
      ('alive_until', 0), ('set_history_retention', 3), ('discard_jobs', 3),
      ('pause_queue', 3), ('resume_queue', 3), ('pause_task', 3), ('resume_task', 3),
      ('cancel_jobs', 3)
    ) AS f(name, rank) ON f.name = p.proname
   WHERE p.pronamespace = (SELECT t.typnamespace FROM pg_type t
                            WHERE t.oid = pg_typeof(NULL::app_jobs.jobs))
     AND (f.rank BETWEEN 1 AND v_rank
          OR f.rank = 0 AND access_functions.access IN ('read', 'operator'))
   ORDER BY f.rank, p.proname;
END
$$;

-- Version 1's change_access, but the read level (fix 13) gets SELECT on the tables too.
CREATE OR REPLACE FUNCTION app_jobs.change_access(role_name text, access text, grant_it boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_schema name := (SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                     WHERE t.oid = pg_typeof(NULL::app_jobs.jobs));
  -- Resolved first, so that an unknown level is reported whatever the role.
  v_functions regprocedure[] := ARRAY(SELECT app_jobs.access_functions(change_access.access));
  v_function regprocedure;
  v_verb text := CASE WHEN grant_it THEN 'GRANT %s %s TO %I' ELSE 'REVOKE %s %s FROM %I' END;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = change_access.role_name) THEN
    RAISE EXCEPTION 'role % does not exist', quote_nullable(role_name)
      USING ERRCODE = '42704', COLUMN = 'role_name',
            HINT = 'Create the role first: the job schema never creates roles.';
  END IF;
  FOREACH v_function IN ARRAY v_functions LOOP
    EXECUTE format(v_verb, 'EXECUTE ON FUNCTION', v_function, role_name);
  END LOOP;
  IF NOT grant_it OR access IN ('read', 'operator') THEN
    EXECUTE format(v_verb, 'SELECT ON ALL TABLES IN SCHEMA', quote_ident(v_schema), role_name);
  END IF;
  EXECUTE format(v_verb, 'USAGE ON SCHEMA', quote_ident(v_schema), role_name);
END
$$;

DO $$
DECLARE
  -- The schema's oid, without writing its name in a literal (it is rendered as an
  -- identifier only): the namespace of the jobs row type.
  v_schema oid := (SELECT t.typnamespace FROM pg_catalog.pg_type t
                    WHERE t.oid = pg_catalog.pg_typeof(NULL::app_jobs.jobs));
  v_grant record;
BEGIN
  -- Who holds a level, and what it gains: a function or a table of this schema, by name.
  FOR v_grant IN
    SELECT DISTINCT r.rolname, g.kind,
           coalesce((SELECT f.oid::regprocedure::text FROM pg_catalog.pg_proc f
                      WHERE f.pronamespace = v_schema AND f.proname = g.name),
                    (SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = v_schema AND c.relname = g.name)) AS object
      FROM (VALUES ('complete_job_batch', 'EXECUTE ON FUNCTION', 'prune_job_history'),
                   ('complete_job_batch', 'EXECUTE ON FUNCTION', 'claim_maintenance'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'alive_until'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'set_history_retention'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'discard_jobs'),
                   ('complete_jobs', 'SELECT ON TABLE', 'job_history'),
                   ('complete_jobs', 'SELECT ON TABLE', 'history_retention'),
                   ('complete_jobs', 'SELECT ON TABLE', 'job_first_starts'),
                   ('complete_jobs', 'SELECT ON TABLE', 'maintenance'),
                   ('complete_jobs', 'SELECT ON TABLE', 'pauses'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'pause_queue'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'resume_queue'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'pause_task'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'resume_task'),
                   ('complete_job_batch', 'EXECUTE ON FUNCTION', 'cancel_requested_jobs'),
                   ('complete_job_batch', 'EXECUTE ON FUNCTION', 'fail_jobs_for_good'),
                   ('complete_job_batch', 'EXECUTE ON FUNCTION', 'retry_jobs_at'),
                   ('complete_jobs', 'EXECUTE ON FUNCTION', 'cancel_jobs'),
                   ('complete_jobs', 'SELECT ON TABLE', 'cancel_requests'),
                   ('add_job', 'EXECUTE ON FUNCTION', 'set_trace_contexts'),
                   ('complete_job_batch', 'EXECUTE ON FUNCTION', 'trace_contexts'),
                   ('complete_jobs', 'SELECT ON TABLE', 'job_trace_contexts')
           ) AS g(held, kind, name)
      JOIN pg_catalog.pg_proc p ON p.pronamespace = v_schema AND p.proname = g.held,
           LATERAL pg_catalog.aclexplode(p.proacl) AS a
      JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE a.privilege_type = 'EXECUTE'
       AND a.grantee <> p.proowner
  LOOP
    EXECUTE pg_catalog.format('GRANT %s %s TO %I', v_grant.kind, v_grant.object, v_grant.rolname);
  END LOOP;
END
$$;

INSERT INTO app_jobs.migrations (version) VALUES (2);
