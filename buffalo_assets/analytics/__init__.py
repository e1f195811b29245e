"""The analytics layer in plain Python: stage durations, order status, delivery KPIs,
the delay-risk model and its report.

No Dagster here; scikit-learn and matplotlib are imported inside the functions that need
them, so importing this package (and the Dagster definitions that use it) stays cheap.
"""
