-- The statements of sqla_pgjobs' scheduler, by name (the "-- name:" lines), for psycopg.

-- name: release
SELECT app_jobs.release_scheduled_jobs(%(scheduler_id)s, NULL);

-- name: claim
SELECT * FROM app_jobs.get_scheduled_jobs(%(scheduler_id)s, %(task_identifiers)s, %(lease)s, %(max_jobs)s);

-- name: renew
SELECT * FROM app_jobs.renew_scheduled_jobs(%(scheduler_id)s, NULL, %(lease)s);

-- name: fire
SELECT * FROM app_jobs.run_scheduled_job(%(id)s, %(job_expiry)s, %(fire_time)s);
