"""The database: schema and migrations, logs, conversations, definitions and secrets."""
