"""The durable job queue in PostgreSQL and the trainer's worker loop."""
