-- sqla-pgjobs: optional indexes, outside the schema's versions.
--
-- Each serves a read the dashboard and `pgjobs jobs list` make, which without it reads
-- the jobs table. None is part of a version: a large table would be locked against
-- writes while a plain CREATE INDEX scans it, so they are built CONCURRENTLY, outside a
-- transaction, by op.create_pgjobs_indexes (or pgjobs migrate --index), when the
-- project wants them. They work on version 1 and 2 alike. The token app_jobs stands for
-- the schema name, as in schema_v1.sql.

-- name: failed
-- Jobs failed for good (attempts used up, not running), newest first: the one state
-- jobs_available_idx leaves out on purpose. A job enters it only when it fails for good,
-- so taking and finishing jobs never touches it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_failed_idx ON app_jobs.jobs (id)
  WHERE attempts >= max_attempts AND locked_at IS NULL;

-- name: payload
-- JSON containment on the payload ({"account_id": 42} finds the jobs whose payload
-- holds it). Every job enqueued adds its payload's paths to it: measure the cost to
-- enqueueing (benchmarks/README.md) before adding it to a busy queue.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_payload_idx ON app_jobs.jobs
  USING gin ((payload::jsonb) jsonb_path_ops);
