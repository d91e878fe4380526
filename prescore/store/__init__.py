"""Redis as the store.

The client (``redis_client``), a dataset's values and versions (``values``, ``versions``),
the registry's atomic ``transitions``, writers' leases (``writers``), housekeeping
(``version_gc``), the miss log (``misslog``) and a local redis-server (``embedded_redis``).
"""
