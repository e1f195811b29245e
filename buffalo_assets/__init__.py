"""The Buffalo Orders Platform: the Dagster code location `buffalo_assets` and its parts.

Start-up cost: every run, code server and `buffalo` command imports Dagster, SQLAlchemy and
pandas, about a million long-lived objects. Python's cyclic garbage collector traverses all
of them at each full collection, while importing, during a run and once more at interpreter
exit (2 s of a 10 s ingest command on a busy machine). They live as long as the process, so
they are moved out of its reach here (what was imported before this package) and again at
the end of `definitions.py` (what the definitions import); reference counting still frees
everything, only cycles among these objects would outlive their use.
"""

import gc

gc.freeze()
