"""Database access: engine, embedded server, models, named queries, migrations."""
