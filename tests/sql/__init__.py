"""The SQL contract, tested through SQL: the job schema's functions, triggers and files."""
