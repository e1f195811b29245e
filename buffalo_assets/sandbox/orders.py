"""The sandbox's order book: seeded, realistic Buffalo orders and the truth behind them.

Every order is generated lazily from `(seed, index)`, so a 100,000-order sandbox costs a
list of creation times and nothing more until a detail is asked for. An order's whole
future (its journey plan) is fixed when it is generated; the sandbox clock only decides
how much of it is visible: a detail shows the events up to "now".

The delay process (hidden from the API, exposed as ground truth for scoring models):

* Promise: delivery 10 business days after the order is created.
* Warehouse processing 1-2 days, dispatch to outbound flight 1-2 days, flight 2-4 days to
  Johannesburg (OR Tambo).
* Customs takes about a day, multiplied by the arrival week's congestion: each ISO week has
  a seeded congestion factor between 1 and 6 (1 + `congestion_scale` x u^2, scale 5 by
  default), so whole weeks run late together.
* Inspection: 5% of parcels, plus 20% more if heavier than 10 kg and 20% more if declared
  above R5,000, are inspected, adding 3-7 days.
* Duties: parcels declared above R500 owe duty (about 25% of the excess). Customs holds a
  parcel until its duty is paid: most customers pay within a day, 20% take 2-5 days and
  10% take 6-15 days (`duty_wait_weights`, default 70/20/10).
* Local transit takes 1-2 days to metro provinces (Gauteng, Western Cape, KwaZulu-Natal)
  and 3-6 days to the others.
* Last mile: 6% of first delivery attempts fail (1-3 days more); 1.5% of parcels are
  returned after failed attempts; 0.7% are lost in transit; 1% are cancelled before
  dispatch.

The delay cause of a late order is the stage that overran its typical duration the most.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from buffalo_assets.sandbox.faults import SHAPES

SAST = timezone(timedelta(hours=2), "SAST")
DAY = 86_400.0
HOUR = 3_600.0
FIRST_ORDER_ID = 31_000_001
PROMISED_BUSINESS_DAYS = 10
DUTY_FREE_VALUE = 500.0

# Stage key -> statusname shown by the API.
STATUS_NAMES = {
    "processing": "Processing",
    "dispatched": "Dispatched",
    "in_transit": "In transit",
    "arrived_hub": "Arrived at Johannesburg",
    "customs": "Customs clearance",
    "out_for_delivery": "Out for delivery",
    "delivered": "Delivered",
    "returned": "Returned",
    "cancelled": "Cancelled",
    "lost": "Lost",
}
TERMINAL_STAGES = frozenset({"delivered", "returned", "cancelled", "lost"})

# (city, province, postal code, suburbs)
CITIES = [
    ("Johannesburg", "Gauteng", "2001", ["Sandton", "Rosebank", "Melville", "Soweto", "Randburg"]),
    ("Pretoria", "Gauteng", "0002", ["Hatfield", "Arcadia", "Menlyn", "Centurion"]),
    ("Cape Town", "Western Cape", "8001", ["Gardens", "Observatory", "Claremont", "Bellville"]),
    ("Stellenbosch", "Western Cape", "7600", ["Die Boord", "Idas Valley"]),
    ("Durban", "KwaZulu-Natal", "4001", ["Berea", "Umhlanga", "Morningside", "Glenwood"]),
    ("Pietermaritzburg", "KwaZulu-Natal", "3201", ["Scottsville", "Hayfields"]),
    ("Gqeberha", "Eastern Cape", "6001", ["Summerstrand", "Walmer", "Newton Park"]),
    ("East London", "Eastern Cape", "5201", ["Vincent", "Beacon Bay"]),
    ("Bloemfontein", "Free State", "9301", ["Westdene", "Universitas"]),
    ("Polokwane", "Limpopo", "0700", ["Bendor", "Westenburg"]),
    ("Thohoyandou", "Limpopo", "0950", ["Shayandima", "Block F"]),
    ("Mbombela", "Mpumalanga", "1200", ["Sonheuwel", "West Acres"]),
    ("Kimberley", "Northern Cape", "8301", ["Belgravia", "Hadison Park"]),
    ("Upington", "Northern Cape", "8800", ["Keidebees", "Oranjeoewer"]),
    ("Mahikeng", "North West", "2745", ["Golf View", "Riviera Park"]),
]
CITY_WEIGHTS = [22, 12, 18, 3, 12, 4, 5, 3, 4, 4, 2, 3, 2, 1, 2]
METRO_PROVINCES = frozenset({"Gauteng", "Western Cape", "KwaZulu-Natal"})
STREETS = [
    "Jacaranda Street",
    "Protea Road",
    "Main Road",
    "Church Street",
    "Oak Avenue",
    "Voortrekker Road",
    "Nelson Mandela Drive",
    "Beach Road",
    "Kloof Street",
    "Long Street",
    "Marula Crescent",
    "Baobab Lane",
    "Acacia Close",
    "Fynbos Way",
    "Umhlanga Rocks Drive",
]
GOODS = [
    ("Phone case", 40, 150),
    ("Bluetooth earphones", 150, 900),
    ("Summer dress", 120, 600),
    ("Running shoes", 300, 1500),
    ("LED strip lights", 80, 350),
    ("Kitchen scale", 90, 300),
    ("Smart watch", 600, 4500),
    ("Laptop stand", 200, 700),
    ("Drone", 1500, 9000),
    ("Phone (refurbished)", 2500, 12000),
    ("Makeup brush set", 60, 250),
    ("Car phone mount", 50, 200),
    ("Gaming keyboard", 400, 2500),
    ("Baby clothes", 80, 400),
]
COURIERS = [("The Courier Guy", "TCG"), ("Pargo pick-up point", "PGO"), ("PostNet", "PNT")]


@dataclass(frozen=True)
class Event:
    at: float  # epoch seconds, UTC
    stage: str
    content: str


@dataclass(frozen=True)
class OrderPlan:
    """Everything about one order, past and future."""

    index: int
    order_id: int
    created_at: float
    tracking_number: str
    address: str
    city: str
    province: str
    postal_code: str
    boxes: list[list[dict[str, Any]]]
    weight: float
    volumetric_weight: float
    cost: float
    duty: float
    duty_assessed_at: float | None
    duty_paid_at: float | None
    courier: tuple[str, str]
    third_number: str
    third_number_at: float
    events: list[Event]
    final_stage: str
    delay_cause: str
    variant: bool  # numbers as strings, epoch-ms times, unknown fields

    @property
    def declared_total(self) -> float:
        return round(sum(line["declaredvalue"] * line["number"] for box in self.boxes for line in box), 2)

    @property
    def item_count(self) -> int:
        return sum(line["number"] for box in self.boxes for line in box)

    @property
    def planned_delivery_at(self) -> float:
        return add_business_days(self.created_at, PROMISED_BUSINESS_DAYS)

    @property
    def delivered_at(self) -> float | None:
        if self.final_stage != "delivered":
            return None
        return self.events[-1].at

    def events_until(self, now: float) -> list[Event]:
        return self.events[: bisect.bisect_right([e.at for e in self.events], now)]

    def stage_at(self, now: float) -> str:
        visible = self.events_until(now)
        return visible[-1].stage if visible else "processing"


def add_business_days(start: float, days: int) -> float:
    moment = datetime.fromtimestamp(start, UTC)
    added = 0
    while added < days:
        moment += timedelta(days=1)
        if moment.astimezone(SAST).weekday() < 5:
            added += 1
    return moment.timestamp()


def sast_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, SAST).strftime("%Y-%m-%d %H:%M:%S")


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class OrderBook:
    """Orders by index (0 = oldest); ids increase with creation time."""

    def __init__(
        self,
        *,
        seed: int,
        count: int,
        start: float,
        history_days: float = 60.0,
        variation_rate: float = 0.0,
        missing_rate: float = 0.0,
        congestion_scale: float = 5.0,
        duty_wait_weights: tuple[float, float, float] = (70, 20, 10),
        shapes: tuple[str, ...] | None = None,
    ) -> None:
        # The two delay knobs exist so a model can be tested on a world it was not built
        # on; the defaults reproduce the original world exactly.
        self.seed = seed
        self.congestion_scale = congestion_scale
        self.duty_wait_weights = duty_wait_weights
        self.variation_rate = variation_rate
        self.shapes = frozenset(SHAPES if shapes is None else shapes)
        self.missing_rate = missing_rate
        self.gone: set[int] = set()
        spacing = history_days * DAY / max(count, 1)
        rng = random.Random(_stable_seed(seed, "created"))
        self.created: list[float] = [
            start - history_days * DAY + (i + 0.5 + rng.uniform(-0.4, 0.4)) * spacing for i in range(count)
        ]
        self.arrival_spacing = spacing
        self._plan = lru_cache(maxsize=50_000)(self._build_plan)

    def __len__(self) -> int:
        return len(self.created)

    def visible_count(self, now: float) -> int:
        return bisect.bisect_right(self.created, now)

    def add(self, count: int, first_at: float, last_at: float) -> None:
        """Append orders created evenly between the two times (never before the newest one)."""
        first_at = max(first_at, self.created[-1] if self.created else first_at)
        step = (last_at - first_at) / count if count else 0.0
        self.created.extend(first_at + step * (i + 1) for i in range(count))

    def order_id(self, index: int) -> int:
        return FIRST_ORDER_ID + index

    def index_of(self, order_id: str) -> int | None:
        try:
            index = int(str(order_id).strip()) - FIRST_ORDER_ID
        except ValueError:
            return None
        return index if 0 <= index < len(self.created) else None

    def is_missing(self, index: int) -> bool:
        if index in self.gone:
            return True
        if self.missing_rate <= 0:
            return False
        return random.Random(_stable_seed(self.seed, "missing", index)).random() < self.missing_rate

    def congestion(self, arrival: float) -> float:
        """The hidden customs congestion factor of the ISO week (SAST) of `arrival`."""
        week = datetime.fromtimestamp(arrival, SAST).isocalendar()
        draw = random.Random(_stable_seed(self.seed, "week", week.year, week.week)).random()
        return 1 + self.congestion_scale * draw**2

    def plan(self, index: int) -> OrderPlan:
        return self._plan(index)

    def _build_plan(self, index: int) -> OrderPlan:
        rng = random.Random(_stable_seed(self.seed, "order", index))
        created = self.created[index]
        city, province, postal, suburbs = rng.choices(CITIES, weights=CITY_WEIGHTS)[0]
        address = (
            f"{rng.randint(1, 240)} {rng.choice(STREETS)}, {rng.choice(suburbs)}, "
            f"{city}, {province}, {postal}"
        )
        boxes: list[list[dict[str, Any]]] = []
        for _ in range(rng.choices([1, 2, 3], weights=[80, 16, 4])[0]):
            lines = []
            for _ in range(rng.choices([1, 2, 3, 4], weights=[55, 25, 12, 8])[0]):
                name, low, high = rng.choice(GOODS)
                declared = round(rng.uniform(low, high), 2)
                actual = declared if rng.random() < 0.85 else round(declared * rng.uniform(0.6, 1.0), 2)
                lines.append(
                    {
                        "goodsname": name,
                        "number": rng.choices([1, 2, 3, 5], weights=[70, 18, 8, 4])[0],
                        "declaredvalue": declared,
                        "actualdeclaredvalue": actual,
                    }
                )
            boxes.append(lines)
        declared_total = sum(line["declaredvalue"] * line["number"] for box in boxes for line in box)
        weight = round(rng.lognormvariate(0.6, 0.9) + 0.1, 2)
        volumetric = round(weight * rng.uniform(0.5, 1.6), 2)
        billed = max(weight, volumetric)
        billed = round(-(-billed * 2 // 1) / 2, 1)  # rounded up to the next 0.5 kg
        cost = round(95 + 68 * billed, 2)
        duty = round(max(0.0, declared_total - DUTY_FREE_VALUE) * 0.25, 2)

        events: list[Event] = []
        overrun: dict[str, float] = {}

        def at(moment: float, stage: str, content: str) -> float:
            events.append(Event(moment, stage, content))
            return moment

        t = at(created, "processing", "Order received at Buffalo Guangzhou warehouse")
        t = at(t + rng.uniform(0.3, 1.0) * DAY, "processing", "Parcel weighed and measured")
        courier = rng.choice(COURIERS)
        third_number = f"{courier[1]}{rng.randint(10**8, 10**9 - 1)}"
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
                inspect_p = 0.05 + 0.2 * (weight > 10) + 0.2 * (declared_total > 5000)
                if rng.random() < inspect_p:
                    inspection = rng.uniform(3, 7)
                    overrun["inspection"] = inspection
                    at(t + 0.1 * DAY, "customs", "Held by customs for inspection")
                    customs_days += inspection
                release = t + customs_days * DAY
                if duty > 0:
                    duty_assessed = at(
                        t + min(customs_days, 0.5) * DAY,
                        "customs",
                        f"Duties assessed: R{duty:.2f}, awaiting payment",
                    )
                    wait_days = rng.choices(
                        [rng.uniform(0.05, 1.0), rng.uniform(2, 5), rng.uniform(6, 15)],
                        weights=list(self.duty_wait_weights),
                    )[0]
                    duty_paid = at(duty_assessed + wait_days * DAY, "customs", "Duties paid")
                    overrun["unpaid_duties"] = max(0.0, duty_paid - release) / DAY
                    release = max(release, duty_paid + 0.1 * DAY)
                t = at(release, "customs", "Released by customs")
                metro = province in METRO_PROVINCES
                local_days = rng.uniform(1, 2) if metro else rng.uniform(3, 6)
                overrun["remote_province"] = local_days - 1.5
                t = at(t + 0.2 * DAY, "in_transit", f"In transit to {city} depot")
                t += local_days * DAY
                third_at = at(t, "out_for_delivery", f"Handed to {courier[0]} for delivery ({third_number})")
                failed = rng.random() < 0.06
                if failed:
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

        suffix = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
        tracking_number = f"BUFZA{rng.randint(10**9, 10**10 - 1)}{suffix}"
        return OrderPlan(
            index=index,
            order_id=self.order_id(index),
            created_at=created,
            tracking_number=tracking_number,
            address=address,
            city=city,
            province=province,
            postal_code=postal,
            boxes=boxes,
            weight=weight,
            volumetric_weight=volumetric,
            cost=cost,
            duty=duty,
            duty_assessed_at=duty_assessed,
            duty_paid_at=duty_paid,
            courier=courier,
            third_number=third_number,
            third_number_at=third_at,
            events=sorted(events, key=lambda e: e.at),
            final_stage=final_stage,
            delay_cause=delay_cause,
            variant=random.Random(_stable_seed(self.seed, "variant", index)).random() < self.variation_rate,
        )

    # -- what the API shows --------------------------------------------------------------

    def detail(self, index: int, now: float) -> dict[str, Any]:
        """The order detail as the API shows it at `now` (bare, without envelope)."""
        plan = self.plan(index)
        visible = plan.events_until(now)
        stage = visible[-1].stage if visible else "processing"
        weighed = len(visible) >= 2
        if plan.duty <= 0:
            tax_status = "No duty"
        elif plan.duty_paid_at is not None and plan.duty_paid_at <= now:
            tax_status = "Paid"
        elif plan.duty_assessed_at is not None and plan.duty_assessed_at <= now:
            tax_status = "Unpaid"
        else:
            tax_status = None
        number = _number_renderer(plan.variant and "numbers_as_text" in self.shapes)
        when = _time_renderer(plan.variant and "epoch_ms_times" in self.shapes)
        updated = visible[-1].at if visible else plan.created_at
        detail: dict[str, Any] = {
            "id": plan.order_id,
            "expressnumber": plan.tracking_number,
            "thirdnumber": plan.third_number if plan.third_number_at <= now else None,
            "statusname": STATUS_NAMES[stage],
            "paystatusname": "Paid" if weighed else "Unpaid",
            "taxpaystatusname": tax_status,
            "receiveaddress": plan.address,
            "ascertainedweight": number(plan.weight) if weighed else None,
            "ascertainedvolumweight": number(plan.volumetric_weight) if weighed else None,
            "ascertainedcost": number(plan.cost) if weighed else None,
            "finalweight": number(max(plan.weight, plan.volumetric_weight)) if weighed else None,
            "receivedtax": number(plan.duty) if tax_status == "Paid" else number(0),
            "displaytime": sast_text(updated),
            "createtimeStr": sast_text(plan.created_at),
            "updatetimeStr": sast_text(updated),
            "boxList": [
                {
                    "boxno": box_no,
                    "detaillist": [
                        {
                            **line,
                            "declaredvalue": number(line["declaredvalue"]),
                            "actualdeclaredvalue": number(line["actualdeclaredvalue"]),
                            "number": number(line["number"]),
                        }
                        for line in box
                    ],
                }
                for box_no, box in enumerate(plan.boxes, start=1)
            ],
            "recordMap": [
                {
                    "id": plan.order_id * 100 + seq,
                    "createtime": when(event.at),
                    "content": event.content,
                    "expressid": plan.order_id,
                }
                for seq, event in reversed(list(enumerate(visible, start=1)))
            ],
        }
        if plan.variant:
            detail = vary_detail(detail, plan, self.shapes)
        return detail

    def list_item(self, index: int) -> dict[str, Any]:
        """An order as a list page shows it; a varied order's id may be text or $numberLong."""
        plan = self.plan(index)
        order_id: Any = plan.order_id
        if plan.variant and "id_forms" in self.shapes:
            order_id = str(order_id) if order_id % 2 == 0 else {"$numberLong": str(order_id)}
        return {"id": order_id, "expressnumber": plan.tracking_number}

    def loose_content_type(self, index: int) -> str | None:
        """The Content-Type a varied order's detail is served with instead of application/json."""
        plan = self.plan(index)
        if not (plan.variant and "loose_content_type" in self.shapes):
            return None
        return "text/html" if plan.order_id % 2 else "text/plain"

    def truth(self, index: int, now: float) -> dict[str, Any]:
        """Ground truth of one order at `now`: what a perfect pipeline would conclude."""
        plan = self.plan(index)
        visible = plan.events_until(now)
        delivered = plan.delivered_at
        return {
            "order_id": str(plan.order_id),
            "created_at": _iso(plan.created_at),
            "stage": visible[-1].stage if visible else "processing",
            "final_stage": plan.final_stage,
            "event_count": len(visible),
            "delivered_at": _iso(delivered) if delivered is not None and delivered <= now else None,
            "planned_delivery_at": _iso(plan.planned_delivery_at),
            "actual_delivery_at": _iso(delivered) if delivered is not None else None,
            "delay_days": round((delivered - plan.planned_delivery_at) / DAY, 2) if delivered else None,
            "delay_cause": plan.delay_cause,
            "box_count": len(plan.boxes),
            "item_count": plan.item_count,
            "declared_total": plan.declared_total,
            "province": plan.province,
            "missing": self.is_missing(index),
        }


# -- shapes of a varied order (see faults.SHAPES) ---------------------------------------------

# Afrikaans street names with diacritics, Chinese and an emoji: a varied order's street.
NON_ASCII_STREETS = ["Kêrkstraat", "Voëlvleiweg", "Môresonlaan", "Tweeëntwintigste Laan", "Sonbesiëstraat"]
NON_ASCII_RECIPIENTS = ["Zoë Nel 张伟", "André du Plessis 🙂", "Anél Mthembu 李娜", "Jürgen Coetzée"]
GOODS_IN_CHINESE = {
    "Phone case": "手机壳 📱",
    "Bluetooth earphones": "蓝牙耳机 🎧",
    "Summer dress": "夏季连衣裙 👗",
    "Running shoes": "跑步鞋 👟",
    "LED strip lights": "LED灯带 💡",
    "Kitchen scale": "厨房秤",
    "Smart watch": "智能手表 ⌚",
    "Laptop stand": "笔记本支架",
    "Drone": "无人机 🚁",
    "Phone (refurbished)": "翻新手机",
    "Makeup brush set": "化妆刷套装 💄",
    "Car phone mount": "车载手机支架",
    "Gaming keyboard": "游戏键盘 ⌨️",
    "Baby clothes": "婴儿服装 👶",
}
EVENTS_IN_CHINESE = {
    "processing": "仓库处理中",
    "dispatched": "已发货",
    "in_transit": "运输中 ✈️",
    "arrived_hub": "已到达约翰内斯堡",
    "customs": "清关中",
    "out_for_delivery": "派送中 🚚",
    "delivered": "已签收 ✅",
    "returned": "已退回",
    "cancelled": "已取消",
    "lost": "已丢失",
}


def vary_detail(detail: dict[str, Any], plan: OrderPlan, shapes: frozenset[str]) -> dict[str, Any]:
    """A varied order's detail in the enabled shapes (numbers and times are done by the caller)."""
    if "non_ascii" in shapes:
        detail = non_ascii_detail(detail, plan)
    if "unknown_fields" in shapes:
        detail["insuranceflag"] = 0
        detail["extMap"] = {"channel": "air-express", "warehouse": "GZ-03"}
    if "missing_keys" in shapes:
        detail = {key: value for key, value in detail.items() if value is not None}
    return detail


def non_ascii_detail(detail: dict[str, Any], plan: OrderPlan) -> dict[str, Any]:
    """Chinese, Afrikaans diacritics and emoji where people write free text; meaning unchanged."""
    number, rest = str(detail["receiveaddress"]).split(" ", 1)
    _, after_street = rest.split(", ", 1)
    street = NON_ASCII_STREETS[plan.order_id % len(NON_ASCII_STREETS)]
    detail["receiveaddress"] = f"{number} {street} (收件人 🏠), {after_street}"
    detail["receivername"] = NON_ASCII_RECIPIENTS[plan.order_id % len(NON_ASCII_RECIPIENTS)]
    for box in detail["boxList"]:
        for line in box["detaillist"]:
            line["goodsname"] = f"{GOODS_IN_CHINESE.get(line['goodsname'], '商品')} {line['goodsname']}"
    stages = {(e.content, e.stage) for e in plan.events}
    by_content = dict(stages)
    for record in detail["recordMap"]:
        chinese = EVENTS_IN_CHINESE.get(by_content.get(record["content"], ""), "")
        if chinese:
            record["content"] = f"{record['content']} / {chinese}"
    return detail


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _number_renderer(as_strings: bool):  # noqa: ANN202 - tiny local factory
    if as_strings:
        return lambda value: str(value)
    return lambda value: value


def _time_renderer(as_epoch_ms: bool):  # noqa: ANN202
    if as_epoch_ms:
        return lambda epoch: int(epoch * 1000)
    return sast_text
