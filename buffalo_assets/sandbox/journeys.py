"""The sandbox's delay processes: how a parcel's journey unfolds, and what makes it late.

A delay model must be judged on a world it was not built on, so the sandbox has more than
one way for parcels to travel. Each process draws one order's whole journey (its tracking
events, final stage and the cause of its delay) from the order's own random stream and the
process's hidden state, which never reaches the API (the benchmark reads it as ground truth).

* `customs` (the default, the original world): customs congestion drawn independently for
  every ISO calendar week, inspections of heavy or valuable parcels, customers slow to pay
  duty, slow local transit to remote provinces, failed delivery attempts. English texts.
* `backlog`: written apart from the first, with other causes and another rhythm. Air
  capacity at the origin follows a persistent daily process (a backlog builds over days
  and drains slowly, never resetting on a Monday); a day's air shipment is sometimes routed
  through a transshipment hub; bulky parcels wait for freighter space; provinces go through
  courier service disruptions that start and end on random days. Duties are prepaid, nobody
  is inspected. Its texts are worded otherwise, in English or (`language="zh"`) in Chinese.
* `chance`: every stage takes a memoryless (exponential) time and nothing else matters, so
  nothing beyond the current stage and the time left predicts lateness: a world where no
  model should beat the stage baseline (the gate's tests use it).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

SAST = timezone(timedelta(hours=2), "SAST")
DAY = 86_400.0
HOUR = 3_600.0
PROMISED_BUSINESS_DAYS = 10
COURIERS = [("The Courier Guy", "TCG"), ("Pargo pick-up point", "PGO"), ("PostNet", "PNT")]
DELAY_PROCESSES = ("customs", "backlog", "chance")
LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class Event:
    at: float  # epoch seconds, UTC
    stage: str
    content: str


@dataclass(frozen=True)
class Parcel:
    """What is fixed about an order before it travels."""

    created: float
    city: str
    province: str
    metro: bool
    weight: float
    volumetric_weight: float
    declared_total: float
    duty: float


@dataclass(frozen=True)
class Journey:
    events: list[Event]
    final_stage: str
    delay_cause: str
    courier: tuple[str, str]
    third_number: str
    third_number_at: float
    duty_assessed_at: float | None
    duty_paid_at: float | None


class DelayProcess(Protocol):
    name: str

    def journey(self, rng: random.Random, parcel: Parcel) -> Journey: ...


def add_business_days(start: float, days: int) -> float:
    moment = datetime.fromtimestamp(start, UTC)
    added = 0
    while added < days:
        moment += timedelta(days=1)
        if moment.astimezone(SAST).weekday() < 5:
            added += 1
    return moment.timestamp()


def stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _draw_courier(rng: random.Random) -> tuple[tuple[str, str], str]:
    courier = rng.choice(COURIERS)
    return courier, f"{courier[1]}{rng.randint(10**8, 10**9 - 1)}"


def make_process(
    name: str,
    seed: int,
    *,
    language: str = "en",
    congestion_scale: float = 5.0,
    duty_wait_weights: tuple[float, float, float] = (70, 20, 10),
) -> DelayProcess:
    """The delay process called `name` (one of DELAY_PROCESSES) for a world of `seed`."""
    if language not in LANGUAGES:
        raise ValueError(f"event texts in {language!r}: choose one of {', '.join(LANGUAGES)}")
    if name == "customs":
        if language != "en":
            raise ValueError("the customs process has English texts only; Chinese texts are the backlog's")
        return CustomsWeeks(seed, congestion_scale, duty_wait_weights)
    if name == "backlog":
        return OriginBacklog(seed, language)
    if name == "chance":
        if language != "en":
            raise ValueError("the chance process has English texts only; Chinese texts are the backlog's")
        return ChanceOnly()
    raise ValueError(f"unknown delay process {name!r}: choose one of {', '.join(DELAY_PROCESSES)}")


# -- customs: the original world --------------------------------------------------------------


class CustomsWeeks:
    """Promise 10 business days; processing 1-2 days, dispatch 1-2, flight 2-4 to Johannesburg.

    Customs takes about a day times the arrival week's congestion (each ISO week, SAST, has a
    seeded factor 1 + `congestion_scale` x u^2). 5% of parcels, plus 20% more if heavier than
    10 kg and 20% more if declared above R5,000, are inspected (3-7 days). Parcels declared
    above R500 owe duty and wait until it is paid (`duty_wait_weights`: within a day, 2-5 or
    6-15 days). Local transit 1-2 days to metro provinces, 3-6 to the others; 6% of first
    delivery attempts fail (1-3 days more, a quarter of those are returned); 0.7% lost, 1%
    cancelled. The delay cause of a late order is the stage that overran the most.
    """

    name = "customs"

    def __init__(self, seed: int, congestion_scale: float, duty_wait_weights: tuple[float, float, float]):
        self.seed = seed
        self.congestion_scale = congestion_scale
        self.duty_wait_weights = duty_wait_weights
        # Congestion surges ordered from the control API: (from, factor), see `surge`.
        self.surges: list[tuple[float, float]] = []

    def congestion(self, arrival: float) -> float:
        """The hidden customs congestion factor of the ISO week (SAST) of `arrival`, times any
        surge in force at `arrival`."""
        week = datetime.fromtimestamp(arrival, SAST).isocalendar()
        draw = random.Random(stable_seed(self.seed, "week", week.year, week.week)).random()
        factor = 1.0
        for start, multiple in self.surges:
            if arrival >= start:
                factor *= multiple
        return (1 + self.congestion_scale * draw**2) * factor

    def surge(self, start: float, factor: float) -> None:
        """From `start` on, customs takes `factor` times as long (a strike, a new inspection
        regime): what a drift detector should notice. Journeys keep their random draws, so
        only parcels reaching the hub from `start` on change."""
        if not factor > 0:
            raise ValueError(f"a congestion factor must be above 0, got {factor}")
        self.surges.append((start, factor))

    @staticmethod
    def inspection_chance(parcel: Parcel) -> float:
        return 0.05 + 0.2 * (parcel.weight > 10) + 0.2 * (parcel.declared_total > 5000)

    def journey(self, rng: random.Random, parcel: Parcel) -> Journey:
        created = parcel.created
        events: list[Event] = []
        overrun: dict[str, float] = {}

        def at(moment: float, stage: str, content: str) -> float:
            events.append(Event(moment, stage, content))
            return moment

        t = at(created, "processing", "Order received at Buffalo Guangzhou warehouse")
        t = at(t + rng.uniform(0.3, 1.0) * DAY, "processing", "Parcel weighed and measured")
        courier, third_number = _draw_courier(rng)
        final_stage = "delivered"
        delay_cause = "none"
        duty_assessed = duty_paid = None
        third_at = float("inf")

        if rng.random() < 0.01:
            at(t + rng.uniform(0.2, 2.0) * DAY, "cancelled", "Order cancelled at the customer's request")
            final_stage, delay_cause = "cancelled", "cancelled"
        else:
            t = at(t + rng.uniform(0.5, 1.5) * DAY, "dispatched", "Dispatched from China warehouse")
            flight = f"{rng.choice(['CZ', 'SA', 'ET', 'EK', 'QR'])}{rng.randint(100, 999)}"
            t = at(t + rng.uniform(1.0, 2.0) * DAY, "in_transit", f"Departed Guangzhou on flight {flight}")
            flight_days = rng.uniform(2.0, 4.0)
            if rng.random() < 0.007:
                at(t + 21 * DAY, "lost", "Parcel reported lost in transit; claim opened")
                final_stage, delay_cause = "lost", "lost"
            else:
                t = at(t + flight_days * DAY, "arrived_hub", "Arrived at Johannesburg (OR Tambo) hub")
                congestion = self.congestion(t)
                customs_days = rng.uniform(0.6, 1.4) * congestion
                overrun["customs_congestion"] = customs_days - 1.0
                t = at(t + 0.2 * DAY, "customs", "Customs clearance in progress")
                if rng.random() < self.inspection_chance(parcel):
                    inspection = rng.uniform(3, 7)
                    overrun["inspection"] = inspection
                    at(t + 0.1 * DAY, "customs", "Held by customs for inspection")
                    customs_days += inspection
                release = t + customs_days * DAY
                if parcel.duty > 0:
                    duty_assessed = at(
                        t + min(customs_days, 0.5) * DAY,
                        "customs",
                        f"Duties assessed: R{parcel.duty:.2f}, awaiting payment",
                    )
                    wait_days = rng.choices(
                        [rng.uniform(0.05, 1.0), rng.uniform(2, 5), rng.uniform(6, 15)],
                        weights=list(self.duty_wait_weights),
                    )[0]
                    duty_paid = at(duty_assessed + wait_days * DAY, "customs", "Duties paid")
                    overrun["unpaid_duties"] = max(0.0, duty_paid - release) / DAY
                    release = max(release, duty_paid + 0.1 * DAY)
                t = at(release, "customs", "Released by customs")
                local_days = rng.uniform(1, 2) if parcel.metro else rng.uniform(3, 6)
                overrun["remote_province"] = local_days - 1.5
                t = at(t + 0.2 * DAY, "in_transit", f"In transit to {parcel.city} depot")
                t += local_days * DAY
                third_at = at(t, "out_for_delivery", f"Handed to {courier[0]} for delivery ({third_number})")
                if rng.random() < 0.06:
                    t = at(
                        t + 0.4 * DAY, "out_for_delivery", "Delivery attempt failed: recipient not available"
                    )
                    extra = rng.uniform(1, 3)
                    overrun["failed_delivery"] = extra
                    t += extra * DAY
                    if rng.random() < 0.25:
                        at(t, "returned", "Returned to sender after failed delivery attempts")
                        final_stage, delay_cause = "returned", "returned"
                if final_stage == "delivered":
                    t = at(t + 0.1 * DAY, "out_for_delivery", "Out for delivery")
                    done = (
                        "Collected from pick-up point"
                        if courier[1] == "PGO"
                        else "Delivered, signed by recipient"
                    )
                    t = at(t + rng.uniform(0.1, 0.4) * DAY, "delivered", done)
                    late = t > add_business_days(created, PROMISED_BUSINESS_DAYS)
                    if late and overrun:
                        delay_cause = max(overrun, key=lambda k: overrun[k])
        return Journey(
            events, final_stage, delay_cause, courier, third_number, third_at, duty_assessed, duty_paid
        )


# -- backlog: written apart from the first ---------------------------------------------------

# Daily air capacity at the origin: log backlog level x_d = PERSISTENCE x_{d-1} + SHOCK e_d,
# a parcel checked in on day d waits about BASE_WAIT_DAYS x exp(x_d) for a flight.
BACKLOG_ORIGIN = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
PERSISTENCE = 0.9
SHOCK = 0.45
BASE_WAIT_DAYS = 3.6
MAX_WAIT_DAYS = 14.0
TRANSSHIPMENT_SHARE = 0.18  # of departure days whose air shipment goes through a transshipment hub
BULKY_KG = 8.0  # volumetric kg above which a parcel waits for freighter space
DISRUPTION_STARTS = 0.04  # per province and day, when none is going on
DISRUPTION_DAYS = 6.0  # mean length of a courier disruption
DEPARTURE_HOUR_SAST = 14

BACKLOG_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "received": "Shipment information received",
        "checked_in": "Parcel checked in at Shenzhen consolidation centre",
        "bulky": "Oversize parcel: moved to freighter capacity",
        "consolidated": "Consolidated into air shipment SZX-{batch}",
        "departed": "Departed Shenzhen on flight {flight}",
        "transshipment": "Transshipment at Dubai (DXB): awaiting connecting flight",
        "arrived": "Arrived in South Africa: Johannesburg gateway",
        "cleared": "Import clearance completed",
        "handed": "Handed to {courier} at Johannesburg gateway ({third})",
        "disruption": "Service disruption at {city} depot: deliveries delayed",
        "out": "Out for delivery with {courier}",
        "exception": "Delivery exception: address incomplete, courier will call",
        "returned": "Returned to shipper",
        "delivered": "Proof of delivery captured",
        "cancelled": "Shipment cancelled by merchant",
        "lost": "Parcel missing after transshipment; investigation opened",
    },
    "zh": {
        "received": "已收到发货信息",
        "checked_in": "包裹已入深圳集运仓",
        "bulky": "超大件：转货机运输",
        "consolidated": "已装入空运批次 SZX-{batch}",
        "departed": "航班 {flight} 已从深圳起飞",
        "transshipment": "迪拜(DXB)中转：等待转运航班",
        "arrived": "已到达南非：约翰内斯堡口岸",
        "cleared": "进口清关完成",
        "handed": "已交付{courier}（{third}）",
        "disruption": "{city}网点服务中断：派送延误",
        "out": "{courier}派送中",
        "exception": "派送异常：地址不完整，快递员将致电",
        "returned": "已退回发件人",
        "delivered": "已签收，签收凭证已上传",
        "cancelled": "商家已取消发货",
        "lost": "包裹中转后丢失，已开始调查",
    },
}


class OriginBacklog:
    """Late parcels come from the origin's backlog, transshipments, bulk and courier disruptions."""

    name = "backlog"

    def __init__(self, seed: int, language: str = "en") -> None:
        self.seed = seed
        self.texts = BACKLOG_TEXTS[language]
        self._levels: list[float] = []
        self._disrupted: dict[str, list[bool]] = {}

    @staticmethod
    def day(moment: float) -> int:
        return int((moment - BACKLOG_ORIGIN) // DAY)

    def backlog_days(self, moment: float) -> float:
        """Hidden: the typical wait for air capacity of a parcel checked in at `moment`."""
        day = self.day(moment)
        if day < 0:
            return BASE_WAIT_DAYS
        if len(self._levels) <= day:
            rng = random.Random(stable_seed(self.seed, "backlog", len(self._levels)))
            level = self._levels[-1] if self._levels else 0.0
            while len(self._levels) <= day:
                level = PERSISTENCE * level + SHOCK * rng.gauss(0.0, 1.0)
                self._levels.append(level)
        return min(MAX_WAIT_DAYS, BASE_WAIT_DAYS * math.exp(self._levels[day]))

    def transshipment_days(self, departure: float) -> float:
        """Hidden: extra days of the air shipment leaving at `departure` (0: a direct flight)."""
        rng = random.Random(stable_seed(self.seed, "transshipment", self.day(departure)))
        return rng.uniform(2.0, 4.5) if rng.random() < TRANSSHIPMENT_SHARE else 0.0

    def disrupted(self, province: str, moment: float) -> bool:
        """Hidden: whether the province's couriers are disrupted on the day of `moment`."""
        day = self.day(moment)
        if day < 0:
            return False
        states = self._disrupted.setdefault(province, [])
        if len(states) <= day:
            rng = random.Random(stable_seed(self.seed, "disruption", province, len(states)))
            state = states[-1] if states else False
            while len(states) <= day:
                state = rng.random() >= 1 / DISRUPTION_DAYS if state else rng.random() < DISRUPTION_STARTS
                states.append(state)
        return states[day]

    @staticmethod
    def departure_after(moment: float) -> float:
        """The next daily departure (14:00 SAST) at least two hours after `moment`."""
        local = datetime.fromtimestamp(moment + 2 * HOUR, SAST)
        slot = local.replace(hour=DEPARTURE_HOUR_SAST, minute=0, second=0, microsecond=0)
        if slot < local:
            slot += timedelta(days=1)
        return slot.timestamp()

    def journey(self, rng: random.Random, parcel: Parcel) -> Journey:
        text = self.texts
        events: list[Event] = []
        causes: dict[str, float] = {}

        def at(moment: float, stage: str, kind: str, **words: Any) -> float:
            events.append(Event(moment, stage, text[kind].format(**words)))
            return moment

        t = at(parcel.created, "processing", "received")
        t = at(t + rng.uniform(0.2, 0.8) * DAY, "processing", "checked_in")
        courier, third_number = _draw_courier(rng)
        if rng.random() < 0.01:
            at(t + rng.uniform(0.1, 1.5) * DAY, "cancelled", "cancelled")
            return Journey(events, "cancelled", "cancelled", courier, third_number, math.inf, None, None)
        wait = min(MAX_WAIT_DAYS, self.backlog_days(t) * rng.uniform(0.6, 1.4))
        causes["origin_backlog"] = wait - BASE_WAIT_DAYS
        if parcel.volumetric_weight > BULKY_KG:
            bulky = rng.uniform(2.0, 4.0)
            causes["freighter_space"] = bulky
            at(t + rng.uniform(0.2, 0.6) * DAY, "processing", "bulky")
            wait += bulky
        departure = self.departure_after(t + wait * DAY)
        batch = f"{self.day(departure) % 10_000:04d}"
        at(departure - rng.uniform(0.3, 0.5) * DAY, "dispatched", "consolidated", batch=batch)
        flight = f"{rng.choice(['CZ', 'ET', 'EK', 'QR', 'TK'])}{rng.randint(100, 999)}"
        t = at(departure, "in_transit", "departed", flight=flight)
        detour = self.transshipment_days(departure)
        if detour:
            causes["transshipment"] = detour
            at(t + rng.uniform(0.6, 0.9) * DAY, "in_transit", "transshipment")
            if rng.random() < 0.02:
                at(t + 25 * DAY, "lost", "lost")
                return Journey(events, "lost", "lost", courier, third_number, math.inf, None, None)
        t = at(t + (rng.uniform(1.2, 2.0) + detour) * DAY, "arrived_hub", "arrived")
        t = at(t + rng.uniform(0.3, 1.0) * DAY, "customs", "cleared")
        duty_at = t if parcel.duty > 0 else None  # prepaid: assessed and paid at clearance
        third_at = at(
            t + rng.uniform(0.2, 0.5) * DAY, "in_transit", "handed", courier=courier[0], third=third_number
        )
        t = third_at
        local = rng.uniform(0.8, 1.8) if parcel.metro else rng.uniform(1.5, 3.0)
        if self.disrupted(parcel.province, t):
            extra = rng.uniform(2.0, 6.0)
            causes["courier_disruption"] = extra
            at(t + rng.uniform(0.3, 0.8) * DAY, "in_transit", "disruption", city=parcel.city)
            local += extra
        t = at(t + local * DAY, "out_for_delivery", "out", courier=courier[0])
        final_stage = "delivered"
        if rng.random() < 0.04:
            at(t + rng.uniform(0.2, 0.5) * DAY, "out_for_delivery", "exception")
            extra = rng.uniform(1.0, 4.0)
            causes["address_exception"] = extra
            t += extra * DAY
            if rng.random() < 0.2:
                at(t, "returned", "returned")
                return Journey(
                    events, "returned", "returned", courier, third_number, third_at, duty_at, duty_at
                )
            t = at(t, "out_for_delivery", "out", courier=courier[0])
        t = at(t + rng.uniform(0.1, 0.4) * DAY, "delivered", "delivered")
        late = t > add_business_days(parcel.created, PROMISED_BUSINESS_DAYS)
        cause = max(causes, key=lambda k: causes[k]) if late else "none"
        return Journey(events, final_stage, cause, courier, third_number, third_at, duty_at, duty_at)


# -- chance: nothing to learn ----------------------------------------------------------------

# Mean days per stage; each stage's time is exponential, so time already spent says nothing.
CHANCE_STAGES: tuple[tuple[str, str, float], ...] = (
    ("processing", "Order received at Buffalo Guangzhou warehouse", 1.5),
    ("dispatched", "Dispatched from China warehouse", 2.0),
    ("in_transit", "Departed Guangzhou", 3.0),
    ("arrived_hub", "Arrived at Johannesburg (OR Tambo) hub", 0.5),
    ("customs", "Customs clearance in progress", 3.0),
    ("out_for_delivery", "Handed to courier for delivery", 2.5),
)


class ChanceOnly:
    """Memoryless stages: lateness is chance, given the stage a parcel is in and the time left."""

    name = "chance"

    def journey(self, rng: random.Random, parcel: Parcel) -> Journey:
        courier, third_number = _draw_courier(rng)
        events: list[Event] = []
        t = parcel.created
        third_at = math.inf
        for stage, content, mean_days in CHANCE_STAGES:
            events.append(Event(t, stage, content))
            if stage == "out_for_delivery":
                third_at = t
            t += rng.expovariate(1 / mean_days) * DAY
        events.append(Event(t, "delivered", "Delivered, signed by recipient"))
        late = t > add_business_days(parcel.created, PROMISED_BUSINESS_DAYS)
        return Journey(
            events, "delivered", "chance" if late else "none", courier, third_number, third_at, None, None
        )
