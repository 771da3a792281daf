"""The pgjobs command as a user and an operator run it."""
