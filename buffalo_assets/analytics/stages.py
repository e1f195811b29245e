"""The one place the analytics take stage names from (a one-line change when they move)."""

from buffalo_assets.orders.vocabulary import STAGES, TERMINAL_STAGES

# Stages an order waits in on its way, in journey order (customs first in the KPIs,
# because it is where parcels wait longest).
JOURNEY_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s not in TERMINAL_STAGES and s != "unknown")

__all__ = ["JOURNEY_STAGES", "STAGES", "TERMINAL_STAGES"]
