"""The sandbox's order book: seeded, realistic Buffalo orders and the truth behind them.

Every order is generated lazily from `(seed, index)`, so a 100,000-order sandbox costs a
list of creation times and nothing more until a detail is asked for. An order's whole
future (its journey plan) is fixed when it is generated; the sandbox clock only decides
how much of it is visible: a detail shows the events up to "now".

The journey itself comes from the book's delay process (`journeys.py`: `customs`, the
original world, by default; `backlog` and `chance` as options), hidden from the API and
exposed as ground truth for scoring models.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from buffalo_assets.sandbox.faults import SHAPES
from buffalo_assets.sandbox.journeys import (
    DAY,
    HOUR,
    PROMISED_BUSINESS_DAYS,
    SAST,
    DelayProcess,
    Event,
    Parcel,
    add_business_days,
    make_process,
)
from buffalo_assets.sandbox.journeys import stable_seed as _stable_seed

__all__ = ["DAY", "HOUR", "SAST", "Event", "OrderBook", "OrderPlan", "add_business_days"]

FIRST_ORDER_ID = 31_000_001
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


def sast_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, SAST).strftime("%Y-%m-%d %H:%M:%S")


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
        delay_process: str = "customs",
        event_language: str = "en",
        congestion_scale: float = 5.0,
        duty_wait_weights: tuple[float, float, float] = (70, 20, 10),
        shapes: tuple[str, ...] | None = None,
    ) -> None:
        # The delay process and its knobs exist so a model can be judged on a world it was
        # not built on; the defaults reproduce the original world exactly.
        self.seed = seed
        self.process: DelayProcess = make_process(
            delay_process,
            seed,
            language=event_language,
            congestion_scale=congestion_scale,
            duty_wait_weights=duty_wait_weights,
        )
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

    def surge(self, start: float, factor: float) -> None:
        """Customs congestion times `factor` for parcels reaching the hub from `start` on."""
        surge = getattr(self.process, "surge", None)
        if surge is None:
            raise ValueError(f"the {self.process.name} delay process has no customs congestion to surge")
        surge(start, factor)
        self._plan.cache_clear()  # plans are rebuilt with the surge; their draws stay the same

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

        journey = self.process.journey(
            rng,
            Parcel(
                created=created,
                city=city,
                province=province,
                metro=province in METRO_PROVINCES,
                weight=weight,
                volumetric_weight=volumetric,
                declared_total=declared_total,
                duty=duty,
            ),
        )
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
            duty_assessed_at=journey.duty_assessed_at,
            duty_paid_at=journey.duty_paid_at,
            courier=journey.courier,
            third_number=journey.third_number,
            third_number_at=journey.third_number_at,
            events=sorted(journey.events, key=lambda e: e.at),
            final_stage=journey.final_stage,
            delay_cause=journey.delay_cause,
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
