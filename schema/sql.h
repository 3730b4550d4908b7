/*
 * sql.h - SQL scripts compiled into the programs from the .sql files by
 * schema/sql2c.sh: the outbox's own schema, and the PostgreSQL migrations
 * in the order they apply. Each array ends with { NULL, NULL }.
 */
#ifndef OUTBOXD_SQL_H
#define OUTBOXD_SQL_H

struct sql_file {
	const char *name;	/* the file's base name, e.g. "001_init.sql" */
	const char *text;	/* its contents */
};

extern const struct sql_file outbox_schema_sql[];
extern const struct sql_file pg_migrations_sql[];

#endif
