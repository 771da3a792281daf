"""Monitoring: the state of a job database (:mod:`~sqla_pgjobs.metrics.database_state`,
plain functions over a connection) and its Prometheus exposition, with the worker's own
metrics (:mod:`~sqla_pgjobs.metrics.prometheus`, which needs the ``metrics`` extra:
``pip install 'sqla-pgjobs[metrics]'``).

Importing this package imports neither module, and ``prometheus_client`` is imported only
by the second.
"""
