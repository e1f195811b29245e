"""The Buffalo Orders Platform: the Dagster code location `buffalo_assets` and its parts.

Start-up cost: every run, code server and `buffalo` command imports Dagster, SQLAlchemy and
pandas, about a million long-lived objects. Python's cyclic garbage collector traverses all
of them at each full collection, while importing, during a run and once more at interpreter
exit (2 s of a 10 s ingest command on a busy machine). They live as long as the process, so
they are moved out of its reach here (what was imported before this package) and again at
the end of `definitions.py` (what the definitions import); reference counting still frees
everything, only cycles among these objects would outlive their use.

The youngest generation is also collected after GC_GEN0_THRESHOLD new objects rather than
Python's 700: while importing, nearly every object survives, so those collections find
nothing to free. In the ingest command (which imports this package when its instance loads
the storage, the checkout's dagster.yaml) that is ~430 collections instead of ~580 before
the run starts (the rest happen while Dagster's CLI imports, before any code of ours runs).
Cyclic garbage waits for at most that many allocations longer.
"""

import gc

GC_GEN0_THRESHOLD = 10_000

gc.freeze()
gc.set_threshold(max(GC_GEN0_THRESHOLD, gc.get_threshold()[0]), *gc.get_threshold()[1:])
