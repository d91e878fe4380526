"""prescore: precompute-first scoring. ``prescore.api`` is the Python API
(``from prescore.api import Prescore``); the rest of the package is the shared core of
the CLI, the jobs, the lookup and the fallback, which the lookup imports without the
Python API's Redis writers, pyarrow or pandas coming along."""
