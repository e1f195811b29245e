"""The customer-facing text of every alert reason: the one place to edit the wording.

Each template is short English for a text message or an e-mail line, filled from the
alert's facts (its `detail`) and the tracking number the customer knows. No address or
name: Buffalo's API holds none that the platform may put in an alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

# How a journey stage reads in a sentence ("Your parcel is ...").
STAGE_WORDS: dict[str, str] = {
    "processing": "being prepared at the warehouse in China",
    "dispatched": "dispatched from the warehouse",
    "in_transit": "on its way to South Africa",
    "arrived_hub": "at the hub in South Africa",
    "customs": "in South African customs",
    "out_for_delivery": "out for delivery",
    "delivered": "delivered",
    "unknown": "on its way",
}

TEMPLATES: dict[str, str] = {
    "at_risk": (
        "Your parcel {parcel} may arrive after the promised date ({promised}). It is {stage} and "
        "we now expect it around {expected}. We are keeping an eye on it."
    ),
    "late": (
        "Your parcel {parcel} is {days_late} past the promised date ({promised}). It is {stage}. "
        "We are sorry for the wait and will let you know when it is delivered."
    ),
    "duty_unpaid": (
        "Your parcel {parcel} is waiting in South African customs for import duty/VAT{amount} to be "
        "paid. Please pay it so that customs can release the parcel."
    ),
    "stuck": (
        "Your parcel {parcel} has had no tracking update for {days_quiet}; it is {stage}. We are "
        "checking with the carrier and will update you."
    ),
    "delivered_after_delay": (
        "Your parcel {parcel} was delivered on {delivered}, {days_late} after the promised date. "
        "Thank you for your patience."
    ),
}


def _day(value: Any) -> str:
    if not value:
        return "unknown"
    day = date.fromisoformat(str(value))
    return f"{day.day} {day:%B}"


def _days(value: Any) -> str:
    days = max(1, round(float(value or 0)))
    return f"{days} day" if days == 1 else f"{days} days"


def render(reason: str, tracking_number: str | None, detail: Mapping[str, Any]) -> str:
    """The message of an alert with `reason` about the parcel `tracking_number`."""
    duty = detail.get("duty_zar")
    return TEMPLATES[reason].format(
        parcel=tracking_number or "(no tracking number yet)",
        stage=STAGE_WORDS.get(str(detail.get("stage")), "on its way"),
        promised=_day(detail.get("promised_date")),
        expected=_day(detail.get("expected_date")),
        delivered=_day(detail.get("delivered_date")),
        days_late=_days(detail.get("days_late")),
        days_quiet=_days(detail.get("days_without_event")),
        amount=f" (R{float(duty):,.2f})" if duty else "",
    )
