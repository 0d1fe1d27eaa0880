#!/usr/bin/env bash
# Separate databases and roles for the metrics (cinestream, plus a read-only role for the API)
# and for Airflow's metadata. Runs once, when the postgres volume is created.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE cinestream LOGIN PASSWORD '${CINESTREAM_DB_PASSWORD}';
CREATE DATABASE cinestream OWNER cinestream;
CREATE ROLE cinestream_reader LOGIN PASSWORD '${CINESTREAM_READER_PASSWORD}';
-- Every API/dashboard query is cut after 5 s (as the local stack's reader role): a costly
-- request answers 503, it cannot hold PostgreSQL.
ALTER ROLE cinestream_reader SET statement_timeout = '5s';
-- A day of top-movies sorts in memory instead of on disk (as the local stack's reader role).
ALTER ROLE cinestream_reader SET work_mem = '32MB';
GRANT CONNECT ON DATABASE cinestream TO cinestream_reader;
CREATE ROLE airflow LOGIN PASSWORD '${AIRFLOW_DB_PASSWORD}';
CREATE DATABASE airflow OWNER airflow;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname cinestream <<SQL
GRANT USAGE ON SCHEMA public TO cinestream_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE cinestream IN SCHEMA public GRANT SELECT ON TABLES TO cinestream_reader;
SQL
