#!/bin/sh
# init-app-role.sh: the role the services (and their migrations) run as.
#
# The postgres image runs this once, when it initialises an empty data
# directory (/docker-entrypoint-initdb.d). It creates $APP_DB_USER as a
# plain login role - not a superuser, cannot create databases or roles,
# cannot bypass row security - and makes it the owner of $POSTGRES_DB and its
# public schema, which is all the migrations (goose and whatsmeow's
# sqlstore) need. A compromised service then holds this database, not the
# whole server (no COPY ... PROGRAM, no other databases, no new roles).
#
# Needs POSTGRES_USER, POSTGRES_DB (set by the image), APP_DB_USER,
# APP_DB_PASSWORD; psql's connection comes from the PG* environment.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}" "${APP_DB_USER:?set APP_DB_USER}" "${APP_DB_PASSWORD:?set APP_DB_PASSWORD}"
psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER DATABASE :"db" OWNER TO :"app_user";
ALTER SCHEMA public OWNER TO :"app_user";
SQL
