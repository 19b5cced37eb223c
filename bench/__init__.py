"""MedView's benchmarks; each runs as ``python -m bench.NAME`` and prints a table (``bench.results``).

The numerical libraries' environment is set here, before any benchmark loads
torch, as ``medview.app`` sets it for the app: the timings are the app's.
"""

from medview.config import prepare_compute_environment

prepare_compute_environment()
