"""The Python surface: the wrappers of the SQL functions, model triggers, the package's layers."""
