-- The statements of sqla_pgjobs' worker, by name (the "-- name:" lines). They are sent
-- through psycopg directly: the worker's hot path skips SQLAlchemy's per-statement cost.
-- Parameters use psycopg's %(name)s style.

-- name: get_jobs
SELECT * FROM app_jobs.get_jobs(%(worker_id)s, %(task_identifiers)s, %(job_expiry)s, %(max_jobs)s);

-- name: complete_jobs
SELECT id FROM app_jobs.complete_job_batch(%(worker_id)s, %(job_ids)s);

-- name: fail_jobs
SELECT id FROM app_jobs.fail_job_batch(%(worker_id)s, %(job_ids)s, %(error_messages)s);

-- name: heartbeat
SELECT app_jobs.heartbeat(%(worker_id)s, %(heartbeat_timeout)s, %(info)s);

-- name: next_run_at
SELECT app_jobs.next_run_at(%(task_identifiers)s) AS next_run_at, now() AS now;

-- name: release_jobs
SELECT app_jobs.release_jobs(%(worker_id)s, %(keep_job_ids)s);
