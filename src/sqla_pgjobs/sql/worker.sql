-- The statements of sqla_pgjobs' worker, by name (the "-- name:" lines). They are sent
-- through psycopg directly: the worker's hot path skips SQLAlchemy's per-statement cost.
-- Parameters use psycopg's %(name)s style.

-- name: cycle
-- One row per job taken (columns of app_jobs.jobs, in order), or one row with NULL job
-- columns when none was; completed, failed, next_run_at, now and cancel_requested (the
-- jobs this worker is asked to stop, read once: a function in FROM) repeat on every row.
SELECT c.completed, c.failed, c.next_run_at, c.now, r.cancel_requested, j.*
  FROM app_jobs.worker_cycle(%(worker_id)s, %(completed_ids)s, %(failed_ids)s,
                             %(error_messages)s, %(task_identifiers)s, %(job_expiry)s,
                             %(max_jobs)s) AS c
 CROSS JOIN app_jobs.cancel_requested_jobs(%(worker_id)s) AS r(cancel_requested)
  LEFT JOIN LATERAL pg_catalog.unnest(c.taken) WITH ORDINALITY AS j ON true
 ORDER BY j.ordinality;

-- name: cycle_traced
-- The cycle of a worker that traces its runs (sqla_pgjobs.tracing): as cycle, each job
-- with the trace context stored when it was enqueued (trace_context, NULL when none was).
-- The contexts are read once for all the jobs taken (a function in a CTE, whose rows the
-- join reads again for each job).
WITH c AS (
  SELECT * FROM app_jobs.worker_cycle(%(worker_id)s, %(completed_ids)s, %(failed_ids)s,
                                      %(error_messages)s, %(task_identifiers)s,
                                      %(job_expiry)s, %(max_jobs)s)
), t AS (
  SELECT * FROM app_jobs.trace_contexts(ARRAY(SELECT (x).id
                                                FROM c, pg_catalog.unnest(c.taken) AS x))
)
SELECT c.completed, c.failed, c.next_run_at, c.now, r.cancel_requested, j.*,
       t.context AS trace_context
  FROM c
 CROSS JOIN app_jobs.cancel_requested_jobs(%(worker_id)s) AS r(cancel_requested)
  LEFT JOIN LATERAL pg_catalog.unnest(c.taken) WITH ORDINALITY AS j ON true
  LEFT JOIN t ON t.job_id = j.id
 ORDER BY j.ordinality;

-- name: heartbeat
SELECT app_jobs.heartbeat(%(worker_id)s, %(heartbeat_timeout)s, %(info)s),
       app_jobs.cancel_requested_jobs(%(worker_id)s) AS cancel_requested;

-- name: fail_for_good
-- Jobs whose payload cannot be their typed task's arguments: failed without a retry.
SELECT count(*) AS failed
  FROM app_jobs.fail_jobs_for_good(%(worker_id)s, %(job_ids)s, %(error_messages)s);

-- name: retry_at
-- Jobs retried at times of the task's choosing, or snoozed (refunds): see retry_jobs_at.
SELECT count(*) AS failed
  FROM app_jobs.retry_jobs_at(%(worker_id)s, %(job_ids)s, %(run_ats)s, %(error_messages)s,
                              %(refunds)s);

-- The same two on a version 1 schema (a rolling upgrade not finished yet): there are no
-- cancel requests to read.

-- name: cycle_version_1
SELECT c.completed, c.failed, c.next_run_at, c.now, NULL::bigint[] AS cancel_requested, j.*
  FROM app_jobs.worker_cycle(%(worker_id)s, %(completed_ids)s, %(failed_ids)s,
                             %(error_messages)s, %(task_identifiers)s, %(job_expiry)s,
                             %(max_jobs)s) AS c
  LEFT JOIN LATERAL pg_catalog.unnest(c.taken) WITH ORDINALITY AS j ON true
 ORDER BY j.ordinality;

-- name: heartbeat_version_1
SELECT app_jobs.heartbeat(%(worker_id)s, %(heartbeat_timeout)s, %(info)s),
       NULL::bigint[] AS cancel_requested;

-- name: release_jobs
SELECT app_jobs.release_jobs(%(worker_id)s, %(keep_job_ids)s);

-- name: claim_prune
-- True for one worker per interval: the one that prunes the job history now.
SELECT app_jobs.claim_maintenance('prune_job_history', %(worker_id)s, %(every)s) AS claimed;

-- name: prune
SELECT app_jobs.prune_job_history(%(max_rows)s) AS deleted;
