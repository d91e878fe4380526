"""Live inference, as the lookup uses it: the one seam a miss goes through (``misses``), the
fallback's ``client`` behind a circuit ``breaker``, ``singleflight`` misses, ``freshness``
(stale answers refreshed off the request's path), ``shadow`` checks of hits, and ``predict``
(``POST /v1/datasets/{name}:predict``)."""
