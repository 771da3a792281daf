-- Remove the job schema and everything in it.
--
-- Refuses (SQLSTATE 2BP01) while objects outside the schema depend on it, typically
-- enqueue triggers on user tables, and names them: dropping the schema must never take
-- a user's objects with it silently.

DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(7064106277914394624); END $$;

DO $$
DECLARE
  v_namespace oid;
  v_name name;
  v_dependents text;
BEGIN
  SELECT t.typnamespace INTO v_namespace
    FROM pg_catalog.pg_type t
   WHERE t.oid = pg_catalog.pg_typeof(NULL::app_jobs.jobs);
  SELECT n.nspname INTO v_name FROM pg_catalog.pg_namespace n WHERE n.oid = v_namespace;

  -- Objects that depend on the schema's tables, functions or types, resolved to the schema
  -- they live in (a trigger or default lives with its table). Unknown kinds count as outside.
  SELECT pg_catalog.string_agg(DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
    INTO v_dependents
    FROM pg_catalog.pg_depend d
   WHERE d.deptype IN ('n', 'a')
     AND ((d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.refobjid IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = v_namespace))
       OR (d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refobjid IN (SELECT p.oid FROM pg_catalog.pg_proc p WHERE p.pronamespace = v_namespace))
       OR (d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
           AND d.refobjid IN (SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typnamespace = v_namespace)))
     AND (CASE d.classid
            WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN
              (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = d.objid)
            WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
              (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.objid)
            WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN
              (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = d.objid)
            WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
              (SELECT c.relnamespace FROM pg_catalog.pg_trigger g
                 JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid WHERE g.oid = d.objid)
            WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
              (SELECT c.relnamespace FROM pg_catalog.pg_attrdef a
                 JOIN pg_catalog.pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid)
            WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
              (SELECT k.connamespace FROM pg_catalog.pg_constraint k WHERE k.oid = d.objid)
            WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
              (SELECT c.relnamespace FROM pg_catalog.pg_rewrite r
                 JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
          END) IS DISTINCT FROM v_namespace;

  IF v_dependents IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop the job schema %: other objects depend on it: %', v_name, v_dependents
      USING ERRCODE = '2BP01',
            HINT = 'Drop those objects first (for enqueue triggers: op.drop_job_trigger or DROP TRIGGER).';
  END IF;
END
$$;

DROP SCHEMA app_jobs CASCADE;
