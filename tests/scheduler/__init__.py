"""The scheduler: fire times without a database, and the scheduler on a real PostgreSQL."""
