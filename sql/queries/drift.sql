-- name: view_definitions
-- Every view of the current schema and of this session's temporary schema, with its definition as PostgreSQL prints it.
SELECT c.relname AS name, n.nspname LIKE 'pg_temp%' AS temporary, pg_get_viewdef(c.oid) AS definition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND (n.oid = current_schema()::regnamespace OR n.oid = pg_my_temp_schema());

-- name: function_bodies
-- Every function of the current schema and of this session's temporary schema: name, arguments and body.
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS signature,
       p.pronamespace = pg_my_temp_schema() AS temporary,
       md5(coalesce(p.prosrc, '') || coalesce(pg_get_function_sqlbody(p.oid), '')) AS body
FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace OR p.pronamespace = pg_my_temp_schema();
