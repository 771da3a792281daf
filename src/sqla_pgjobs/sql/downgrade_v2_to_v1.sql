-- sqla-pgjobs schema: downgrade from version 2 to version 1.
--
-- Restores version 1 exactly: the functions version 2 replaced get their version 1
-- definitions back (copied verbatim from schema_v1.sql), and what version 2 added is
-- dropped: the helpers, the pauses (paused queues and tasks run again), the cancel
-- requests, the job history with its tables and the stored trace contexts (what a
-- downgrade loses).
-- tests/migrations/test_upgrade_v1_to_v2.py checks that version 1, upgraded and
-- downgraded again, has the catalog of a fresh version 1.
--
-- Like the upgrade, it runs online: CREATE OR REPLACE FUNCTION with unchanged signatures
-- and privileges, no table of version 1 touched. What version 2 wrote stays valid under
-- version 1: a job detached from its key is one attempt beyond max_attempts, which
-- version 1's release_jobs cannot make runnable either; a schedule fired with an explicit
-- fire_time has that time as last_scheduled, as under version 1.

-- Migrations of the job schema take this lock for the rest of their transaction.
DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(7064106277914394624); END $$;

DO $$
DECLARE
  v_version integer;
BEGIN
  SELECT max(m.version) INTO v_version FROM app_jobs.migrations m;
  IF v_version IS DISTINCT FROM 2 THEN
    RAISE EXCEPTION 'the job schema is not at version 2 (it is at version %)', v_version
      USING ERRCODE = '55000',
            HINT = 'downgrade_v2_to_v1 applies to version 2 only.';
  END IF;
END
$$;

--------------------------------------------------------------------------------------------
-- Version 1's definitions, verbatim (schema_v1.sql; only CREATE became CREATE OR REPLACE)
--------------------------------------------------------------------------------------------

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

    UPDATE app_jobs.jobs j
       SET key = NULL, attempts = j.max_attempts, updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
     WHERE j.key = add_job.job_key
       AND j.database_id IS NOT DISTINCT FROM add_job.db_id
       AND j.locked_at IS NOT NULL;
  END LOOP;

  RAISE EXCEPTION 'could not place job with key % after 10 attempts', add_job.job_key
    USING ERRCODE = '40001', HINT = 'Another session keeps taking this key; retry the transaction.';
END
$$;

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
BEGIN
  -- now() minus a larger expiry leaves the timestamp range: say so, naming the argument,
  -- rather than fail with "timestamp out of range" (get_jobs calls this first).
  IF v_expiry > interval '365000 days' THEN
    RAISE EXCEPTION 'job_expiry must be at most 365000 days, got %', v_expiry
      USING ERRCODE = '22023', COLUMN = 'job_expiry';
  END IF;
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

  WITH gone AS (
    DELETE FROM app_jobs.workers w
     WHERE w.worker_id IN (SELECT s.worker_id
                             FROM app_jobs.workers s
                            WHERE app_jobs.alive_until(s.last_heartbeat, s.heartbeat_timeout)
                                  < v_now
                              FOR UPDATE SKIP LOCKED)
    RETURNING w.worker_id, w.last_heartbeat
  ), freed AS (
    UPDATE app_jobs.jobs j
       SET locked_by = NULL,
           locked_at = NULL,
           last_error = format('worker %s stopped heartbeating (last heartbeat %s)',
                               g.worker_id, g.last_heartbeat),
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM gone g
     WHERE j.locked_by = g.worker_id AND j.locked_at IS NOT NULL
  )
  SELECT array_agg(g.worker_id) INTO v_dead FROM gone g;

  IF v_dead IS NOT NULL THEN
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
     WHERE q.locked_by = ANY (v_dead);
  END IF;

  UPDATE app_jobs.jobs j
     SET locked_by = NULL,
         locked_at = NULL,
         last_error = format('lock held by %s since %s expired after %s',
                             j.locked_by, j.locked_at, v_expiry),
         updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
   WHERE j.id IN (SELECT e.id
                    FROM app_jobs.jobs e
                   WHERE e.locked_at < v_now - v_expiry
                     AND NOT EXISTS (SELECT 1 FROM app_jobs.workers w
                                      WHERE w.worker_id = e.locked_by)
                   -- ORDER BY keeps the plan on jobs_locked_at_idx: a generic plan with a
                   -- plain LIMIT chose a sequential scan of the whole table.
                   ORDER BY e.locked_at
                   LIMIT 1000
                     FOR UPDATE SKIP LOCKED);
END
$$;

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
  v_priority integer;
  v_first_run_at timestamptz;
  v_cursor refcursor;
  v_candidate record;
  v_queue record;
BEGIN
  PERFORM app_jobs.assert_worker_id(get_jobs.worker_id);
  PERFORM app_jobs.assert_positive('max_jobs', v_limit);

  PERFORM app_jobs.recover_jobs(v_expiry);

  -- The first entry of the runnable set: its priority, and the run_at the cursor below
  -- starts from. Completed jobs leave dead entries at the head of jobs_available_idx until
  -- vacuum; starting the cursor there walks them once per call, not twice (with 200,000 of
  -- them, a walk reads about 1,800 index pages: 2-3 ms). A row comparison on (run_at, id)
  -- would be exact, but its generic plan sorts the whole priority instead of reading the
  -- index in order.
  SELECT j.priority, j.run_at INTO v_priority, v_first_run_at
    FROM app_jobs.jobs j
   WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
   ORDER BY j.priority, j.run_at, j.id
   LIMIT 1;

  <<priorities>>
  WHILE v_priority IS NOT NULL LOOP
    -- An explicit cursor fetches (and so row-locks) one candidate at a time; a FOR loop
    -- over the query would prefetch and lock ten, taking them from other workers (P3).
    OPEN v_cursor FOR
      SELECT j.id, j.queue_name
        FROM app_jobs.jobs j
       WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
         AND j.priority = v_priority
         AND j.run_at <= v_now
         AND j.run_at >= v_first_run_at
         AND (get_jobs.task_identifiers IS NULL
              OR j.task_identifier = ANY (get_jobs.task_identifiers))
       ORDER BY j.run_at, j.id
       FOR UPDATE SKIP LOCKED;
    LOOP
      FETCH v_cursor INTO v_candidate;
      EXIT WHEN NOT FOUND;

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
    EXIT priorities WHEN cardinality(v_ids) >= v_limit;

    SELECT j.priority, j.run_at INTO v_priority, v_first_run_at
      FROM app_jobs.jobs j
     WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
       AND j.priority > v_priority
     ORDER BY j.priority, j.run_at, j.id
     LIMIT 1;
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
-- held by worker_id are left alone (C1). Returns the completed jobs.
CREATE OR REPLACE FUNCTION app_jobs.complete_job_batch(worker_id text, job_ids bigint[])
RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  PERFORM app_jobs.assert_worker_id(complete_job_batch.worker_id);
  RETURN QUERY
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
  SELECT * FROM done;
END
$$;

-- Fail the listed jobs that worker_id holds: record the error (a placeholder when it is
-- NULL, C2), unlock, and push run_at back by exp(min(attempts, 10)) seconds. A job whose
-- attempts are used up stays in the table, visibly failed. error_messages pairs with
-- job_ids element by element (NULL: no messages).
CREATE OR REPLACE FUNCTION app_jobs.fail_job_batch(
  worker_id text,
  job_ids bigint[],
  error_messages text[] DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
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

  RETURN QUERY
  WITH failed AS (
    UPDATE app_jobs.jobs j
       SET last_error = coalesce(f.error_message, 'job failed without an error message'),
           locked_by = NULL,
           locked_at = NULL,
           run_at = GREATEST(now(), j.run_at)
                    + (exp(LEAST(j.attempts, 10))::text || ' seconds')::interval,
           updated_at = GREATEST(now(), j.updated_at + interval '1 millisecond')
      FROM unnest(fail_job_batch.job_ids, fail_job_batch.error_messages) AS f(id, error_message)
     WHERE j.id = f.id
       AND j.locked_by = fail_job_batch.worker_id
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
     WHERE q.queue_name IN (SELECT f.queue_name FROM failed f)
       AND q.locked_by = fail_job_batch.worker_id
  )
  SELECT * FROM failed;
END
$$;

-- Give back the jobs and queues worker_id holds (all, or all but keep_job_ids), refunding
-- the interrupted attempt: on shutdown, at start after a crash, or after a reconnect.
CREATE OR REPLACE FUNCTION app_jobs.release_jobs(worker_id text, keep_job_ids bigint[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  PERFORM app_jobs.assert_worker_id(release_jobs.worker_id);

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

-- The earliest time a job could be taken (NULL: none known): the earliest run_at of the
-- jobs not held, or the moment a silent worker's held jobs become recoverable. A worker
-- with nothing to do sleeps until then instead of until its next poll (P5). One index
-- probe per priority in use.
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
  -- A silent worker's jobs become takeable when its heartbeat timeout runs out.
  v_earliest timestamptz := (SELECT min(app_jobs.alive_until(w.last_heartbeat,
                                                               w.heartbeat_timeout))
                               FROM app_jobs.workers w
                              WHERE EXISTS (SELECT 1 FROM app_jobs.jobs j
                                             WHERE j.locked_by = w.worker_id
                                               AND j.locked_at IS NOT NULL));
BEGIN
  -- As in get_jobs: the first entry of each priority, then (with a task filter) a search
  -- from its run_at on, so the dead entries of unvacuumed jobs are walked only once.
  SELECT j.priority, j.run_at INTO v_priority, v_first_run_at
    FROM app_jobs.jobs j
   WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
   ORDER BY j.priority, j.run_at, j.id
   LIMIT 1;
  WHILE v_priority IS NOT NULL LOOP
    IF next_run_at.task_identifiers IS NULL THEN
      v_run_at := v_first_run_at;
    ELSE
      SELECT j.run_at INTO v_run_at
        FROM app_jobs.jobs j
       WHERE j.locked_at IS NULL AND j.attempts < j.max_attempts
         AND j.priority = v_priority
         AND j.run_at >= v_first_run_at
         AND j.task_identifier = ANY (next_run_at.task_identifiers)
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

CREATE OR REPLACE FUNCTION app_jobs.complete_jobs(
  job_ids bigint[],
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
  WITH done AS (
    DELETE FROM app_jobs.jobs j
     WHERE j.id = ANY (complete_jobs.job_ids)
       AND (complete_jobs.force IS TRUE
            OR NOT app_jobs.lock_is_held(j.locked_at, j.locked_by,
                                         now() - coalesce(complete_jobs.job_expiry, interval '4 hours')))
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
      FROM done d
     WHERE q.queue_name = d.queue_name AND q.locked_by = d.locked_by
  )
  SELECT * FROM done;
$$;

CREATE OR REPLACE FUNCTION app_jobs.permanently_fail_jobs(
  job_ids bigint[],
  error_message text DEFAULT NULL,
  job_expiry interval DEFAULT interval '4 hours',
  force boolean DEFAULT false
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
  WITH stale AS (
    SELECT j.id, j.queue_name, j.locked_by
      FROM app_jobs.jobs j
     WHERE j.id = ANY (permanently_fail_jobs.job_ids)
       AND (permanently_fail_jobs.force IS TRUE
            OR NOT app_jobs.lock_is_held(j.locked_at, j.locked_by,
                                         now() - coalesce(permanently_fail_jobs.job_expiry, interval '4 hours')))
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
    RETURNING j.*
  ), freed AS (
    UPDATE app_jobs.job_queues q
       SET locked_by = NULL, locked_at = NULL
      FROM stale s
     WHERE q.queue_name = s.queue_name AND q.locked_by = s.locked_by
  )
  SELECT * FROM failed;
$$;

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
  )
  SELECT * FROM changed;

  -- Rescheduled jobs may be due now; wake the workers (P5).
  PERFORM pg_notify('jobs:insert', '');
END
$$;

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

CREATE OR REPLACE FUNCTION app_jobs.renew_scheduled_jobs(
  worker_id text,
  ids bigint[] DEFAULT NULL,
  lease interval DEFAULT interval '5 minutes'
) RETURNS SETOF app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  PERFORM app_jobs.assert_worker_id(renew_scheduled_jobs.worker_id);
  RETURN QUERY
  UPDATE app_jobs.scheduled_jobs s
     SET locked_at = now(),
         lease_expires_at = now() + coalesce(renew_scheduled_jobs.lease, interval '5 minutes')
   WHERE s.locked_by = renew_scheduled_jobs.worker_id
     AND (renew_scheduled_jobs.ids IS NULL OR s.id = ANY (renew_scheduled_jobs.ids))
  RETURNING s.*;
END
$$;

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
  SELECT * INTO v_schedule
    FROM app_jobs.scheduled_jobs s
   WHERE s.id = run_scheduled_job.id
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN v_job;
  END IF;

  IF v_schedule.last_scheduled IS NOT NULL
     AND ((run_scheduled_job.fire_time IS NOT NULL
           AND v_schedule.last_scheduled >= run_scheduled_job.fire_time)
          OR (run_scheduled_job.fire_time IS NULL
              AND v_schedule.last_scheduled > now() - interval '500 milliseconds'))
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
-- What version 2 added
--------------------------------------------------------------------------------------------

-- No function refers to them any more. The history goes with its tables: a downgrade
-- loses the history and the cancel requests of running jobs (which then complete, or
-- fail and are retried, as under version 1), and nothing else.
DROP FUNCTION app_jobs.set_trace_contexts(bigint[], jsonb);
DROP FUNCTION app_jobs.trace_contexts(bigint[]);
DROP FUNCTION app_jobs.fail_jobs_for_good(text, bigint[], text[]);
DROP FUNCTION app_jobs.retry_jobs_at(text, bigint[], timestamptz[], text[], boolean[]);
DROP FUNCTION app_jobs.cancel_jobs(bigint[], interval);
DROP FUNCTION app_jobs.cancel_requested_jobs(text);
DROP FUNCTION app_jobs.end_cancelled(bigint[], text[]);
DROP FUNCTION app_jobs.assert_interval(text, interval);
DROP FUNCTION app_jobs.prune_job_history(integer, interval);
DROP FUNCTION app_jobs.claim_maintenance(text, text, interval);
DROP FUNCTION app_jobs.set_history_retention(text, interval, text, text);
DROP FUNCTION app_jobs.discard_jobs(bigint[], interval, boolean);
DROP FUNCTION app_jobs.pause_queue(text), app_jobs.resume_queue(text),
              app_jobs.pause_task(text), app_jobs.resume_task(text);
DROP FUNCTION app_jobs.set_paused(text, text, boolean);
DROP FUNCTION app_jobs.remove_jobs(text, bigint[], interval, boolean);
DROP FUNCTION app_jobs.record_history(text, app_jobs.jobs[]);
DROP FUNCTION app_jobs.as_finished(app_jobs.jobs, timestamptz, text, timestamptz);
DROP TABLE app_jobs.job_history, app_jobs.history_retention, app_jobs.job_first_starts,
  app_jobs.maintenance, app_jobs.pauses, app_jobs.cancel_requests, app_jobs.job_trace_contexts;

-- alive_until leaves the operator level, and the read level goes: version 1's list, and
-- the grants taken back (those of the functions and tables dropped above went with them).
CREATE OR REPLACE FUNCTION app_jobs.access_functions(access text) RETURNS SETOF regprocedure
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_levels text[] := ARRAY['enqueue', 'worker', 'operator'];
  v_rank integer := array_position(v_levels, access_functions.access);
BEGIN
  IF v_rank IS NULL THEN
    RAISE EXCEPTION 'access % is not one of enqueue, worker, operator', quote_nullable(access)
      USING ERRCODE = '22023', COLUMN = 'access';
  END IF;
  RETURN QUERY
  SELECT p.oid::regprocedure
    FROM pg_proc p
    JOIN (VALUES
      ('add_job', 1), ('add_jobs', 1), ('add_scheduled_job', 1),
      ('tg_add_job_with_row_id', 1), ('tg_add_job_with_row', 1),
      ('tg_add_job_with_fields', 1), ('trigger_job_with_fields', 1), ('tg_add_job', 1),
      ('get_job', 2), ('get_jobs', 2), ('complete_job', 2), ('complete_job_batch', 2),
      ('fail_job', 2), ('fail_job_batch', 2), ('release_jobs', 2),
      ('heartbeat', 2), ('next_run_at', 2), ('recover_jobs', 2), ('worker_cycle', 2),
      ('get_scheduled_job', 2), ('get_scheduled_jobs', 2), ('renew_scheduled_jobs', 2),
      ('release_scheduled_jobs', 2), ('run_scheduled_job', 2),
      ('complete_jobs', 3), ('permanently_fail_jobs', 3), ('reschedule_jobs', 3)
    ) AS f(name, rank) ON f.name = p.proname
   WHERE p.pronamespace = (SELECT t.typnamespace FROM pg_type t
                            WHERE t.oid = pg_typeof(NULL::app_jobs.jobs))
     AND f.rank <= v_rank
   ORDER BY f.rank, p.proname;
END
$$;

-- Version 1's change_access: version 1 has no read level. A role granted it keeps USAGE
-- on the schema and SELECT on the tables (alive_until is taken back below, from every
-- role); revoke_access(role, 'operator') takes those back under version 1.
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
  IF NOT grant_it OR access = 'operator' THEN
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
  v_alive_until regprocedure;
  v_role name;
BEGIN
  SELECT p.oid INTO v_alive_until FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = v_schema AND p.proname = 'alive_until';
  FOR v_role IN
    SELECT DISTINCT r.rolname
      FROM pg_catalog.pg_proc p,
           LATERAL pg_catalog.aclexplode(p.proacl) AS a
      JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE p.pronamespace = v_schema AND p.proname = 'alive_until'
       AND a.privilege_type = 'EXECUTE'
       AND a.grantee <> p.proowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', v_alive_until, v_role);
  END LOOP;
END
$$;

DELETE FROM app_jobs.migrations WHERE version = 2;
