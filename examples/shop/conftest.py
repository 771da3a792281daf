"""Makes the example's `shop` package importable for its tests. The pgjobs_* fixtures come
from sqla_pgjobs' pytest plugin, registered when the package is installed."""
