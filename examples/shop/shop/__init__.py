"""An example application using sqla-pgjobs."""
