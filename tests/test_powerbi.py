"""The Power BI template (powerbi/) matches the BI views it reads.

A small reader of TMDL (tab-indented objects with properties) parses the semantic model of
powerbi/BuffaloOrders.SemanticModel; the model is checked on its own (references, the date
table, the parameters, the project files) and against a migrated database: every table
reads an existing `analytics.bi_*` view, every column is a column of that view with a
compatible type, a view column the template leaves out is in OMITTED or named, and every
date of a view is related to the calendar. Power BI Desktop itself does not run here.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import ROOT

POWERBI = ROOT / "powerbi"
MODEL = POWERBI / "BuffaloOrders.SemanticModel"
DEFINITION = MODEL / "definition"
CALENDAR = ("bi_calendar", "date")

# PostgreSQL's types (information_schema.columns.data_type) as the model's data types.
TMDL_TYPES = {
    "smallint": "int64", "integer": "int64", "bigint": "int64",
    "double precision": "double", "real": "double", "numeric": "decimal",
    "text": "string", "character varying": "string",
    "timestamp with time zone": "dateTime", "timestamp without time zone": "dateTime", "date": "dateTime",
    "boolean": "boolean",
}  # fmt: skip
# View columns the template leaves out on purpose, and why.
OMITTED: dict[tuple[str, str], str] = {
    ("bi_delay_predictions", "reasons"): "long text on every history row; the reasons in force are in "
    "bi_order_delay_risk and bi_delay_worklist",
}
# The measures the documentation promises (docs/powerbi.md).
MEASURES = {"Late share", "On-time share", "Orders at risk", "Orders in flight"}


# -- a reader of TMDL ---------------------------------------------------------------------------------


@dataclass
class Node:
    kind: str
    name: str
    value: str | None = None  # the expression after `=`
    props: dict[str, str | bool] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def all(self, kind: str) -> list[Node]:
        return [child for child in self.children if child.kind == kind]


OBJECT = re.compile(
    r"^(ref table|table|column|measure|partition|relationship|expression|annotation|hierarchy|level|"
    r"variation|queryGroup|cultureInfo|database|model|role|perspective|calculationGroup|calculationItem)"
    r"(?: ('(?:[^']|'')*'|[^\s=']+))?(?: = ?(.*))?$"
)
PROPERTY = re.compile(r"^(\w+)\s*(:|=)\s*(.*)$")


def unquote(name: str) -> str:
    return name[1:-1].replace("''", "'") if name.startswith("'") else name


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip("\t"))


def parse_tmdl(text: str, where: str = "") -> list[Node]:
    """The objects of a TMDL file, nested by their tab indentation."""
    lines = text.splitlines()
    root = Node("root", "")
    stack: list[tuple[int, Node]] = [(-1, root)]
    i = 0

    def expression(start: int, depth: int) -> tuple[str, int]:
        """The lines of a multi-line expression: indented two tabs deeper than its owner."""
        taken, j = [], start
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) >= depth + 2):
            taken.append(lines[j][depth + 2 :])
            j += 1
        while taken and not taken[-1].strip():
            taken.pop()
            j -= 1
        return "\n".join(taken), j

    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip("\t").startswith("///"):
            continue
        depth = _indent(line)
        body = line[depth:]
        assert not body.startswith(" "), f"{where}:{i}: indented with spaces, not tabs: {line!r}"
        while stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1]
        match = OBJECT.match(body)
        if match:
            kind, name, value = match.group(1), unquote(match.group(2) or ""), match.group(3)
            if value == "":
                value, i = expression(i, depth)
            node = Node(kind, name, value)
            parent.children.append(node)
            stack.append((depth, node))
            continue
        prop = PROPERTY.match(body)
        if prop:
            key, sign, value = prop.groups()
            if sign == "=" and value == "":
                value, i = expression(i, depth)
            parent.props[key] = value
        else:
            parent.props[body.strip()] = True  # a flag: isKey, legacyRedirects, ...
    return root.children


@dataclass
class SemanticModel:
    tables: dict[str, Node]
    relationships: list[Node]
    expressions: dict[str, Node]
    refs: list[str]

    def columns(self, table: str) -> dict[str, Node]:
        return {c.name: c for c in self.tables[table].all("column")} if table in self.tables else {}

    def measures(self) -> dict[str, tuple[str, Node]]:
        return {m.name: (t.name, m) for t in self.tables.values() for m in t.all("measure")}


def read_model(definition: Path = DEFINITION) -> SemanticModel:
    def parse(path: Path) -> list[Node]:
        return parse_tmdl(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())

    tables = {}
    for path in sorted((definition / "tables").glob("*.tmdl")):
        (table,) = parse(path)
        assert table.kind == "table" and table.name == path.stem, path
        tables[table.name] = table
    top = parse(definition / "model.tmdl")
    assert [n.kind for n in top if n.kind == "model"] == ["model"]
    refs = [n.name for n in top if n.kind == "ref table"]
    return SemanticModel(
        tables=tables,
        relationships=parse(definition / "relationships.tmdl"),
        expressions={n.name: n for n in parse(definition / "expressions.tmdl")},
        refs=refs,
    )


def split_column(reference: str) -> tuple[str, str]:
    """`table.column` (either part may be quoted) as its two names."""
    match = re.fullmatch(r"('(?:[^']|'')*'|[^.']+)\.('(?:[^']|'')*'|[^.']+)", reference.strip())
    assert match, reference
    return unquote(match.group(1)), unquote(match.group(2))


SOURCE = re.compile(
    r'PostgreSQL\.Database\(Server, Database\).*Source\{\[Schema="(\w+)", ?Item="(\w+)"\]\}', re.S
)


def partition_view(table: Node) -> tuple[str, str] | None:
    """The (schema, view) the table's only partition reads, if it reads one the expected way."""
    partitions = table.all("partition")
    if len(partitions) != 1 or partitions[0].props.get("mode") != "import":
        return None
    match = SOURCE.search(str(partitions[0].props.get("source", "")))
    return (match.group(1), match.group(2)) if match else None


# -- the checks ------------------------------------------------------------------------------------------


def model_problems(model: SemanticModel) -> list[str]:
    """What is inconsistent in the model itself."""
    problems = []
    if sorted(model.refs) != sorted(model.tables):
        problems.append(f"model.tmdl refers to {sorted(model.refs)}, tables/ holds {sorted(model.tables)}")
    for name in ("Server", "Database"):
        parameter = model.expressions.get(name)
        if parameter is None or not re.search(
            r"meta \[IsParameterQuery=true, Type=\"Text\"", parameter.value or ""
        ):
            problems.append(f"expressions.tmdl: no text parameter {name}")
    for table in model.tables.values():
        if partition_view(table) is None:
            problems.append(
                f"{table.name}: not one import partition reading PostgreSQL.Database(Server, Database)"
            )
        for column in table.all("column"):
            if column.props.get("dataType") not in set(TMDL_TYPES.values()):
                problems.append(f"{table.name}.{column.name}: dataType {column.props.get('dataType')}")
            if not column.props.get("sourceColumn"):
                problems.append(f"{table.name}.{column.name}: no sourceColumn")
    calendar, key = CALENDAR
    columns = model.columns(calendar)
    if model.tables.get(calendar) is None or model.tables[calendar].props.get("dataCategory") != "Time":
        problems.append(f"{calendar} is not marked as the date table (dataCategory: Time)")
    if key not in columns or columns[key].props.get("isKey") is not True:
        problems.append(f"{calendar}.{key} is not its key (isKey)")
    active: dict[tuple[str, str], int] = {}
    for relationship in model.relationships:
        ends = []
        for end in ("fromColumn", "toColumn"):
            table, column = split_column(str(relationship.props.get(end, "")))
            ends.append(table)
            if column not in model.columns(table):
                problems.append(
                    f"relationship {relationship.name}: {end} {table}.{column} is not in the model"
                )
        if relationship.props.get("isActive") != "false":
            pair = (ends[0], ends[1])
            active[pair] = active.get(pair, 0) + 1
    problems += [f"{a} and {b}: {n} active relationships" for (a, b), n in active.items() if n > 1]
    measures = model.measures()
    problems += [f"measure {name!r} is missing" for name in sorted(MEASURES - set(measures))]
    for name, (_, measure) in measures.items():
        expression = measure.value or ""
        for table, column in re.findall(r"('(?:[^']|'')*'|\b\w+)\[([^\]]+)\]", expression):
            if column not in model.columns(unquote(table)):
                problems.append(f"measure {name!r}: {unquote(table)}[{column}] is not in the model")
        for alone in re.findall(r"(?<![\w'\]])\[([^\]]+)\]", expression):
            if alone not in measures:
                problems.append(f"measure {name!r}: [{alone}] is no measure")
        for table in re.findall(r"\b(?:COUNTROWS|REMOVEFILTERS|ALL|FILTER)\((\w+)[,)]", expression):
            if table not in model.tables:
                problems.append(f"measure {name!r}: table {table} is not in the model")
    return problems


Views = dict[str, dict[str, str]]  # view -> column -> information_schema data_type


def view_problems(model: SemanticModel, views: Views) -> list[str]:
    """Where the model and the database's BI views differ."""
    problems = []
    read = {}
    for table in model.tables.values():
        source = partition_view(table)
        if source is None:
            continue
        schema, view = source
        if schema != "analytics" or not view.startswith("bi_") or view not in views:
            problems.append(f"{table.name}: reads {schema}.{view}, which is no analytics.bi_* view")
            continue
        read[view] = table.name
        for column in table.all("column"):
            source_column = str(column.props.get("sourceColumn", ""))
            kind = views[view].get(source_column)
            if kind is None:
                problems.append(f"{table.name}.{column.name}: {view} has no column {source_column}")
            elif TMDL_TYPES.get(kind) != column.props.get("dataType"):
                problems.append(
                    f"{table.name}.{column.name}: dataType {column.props.get('dataType')}, but {view}."
                    f"{source_column} is {kind} ({TMDL_TYPES.get(kind)})"
                )
    problems += [
        f"analytics.{view} is read by no table of the template" for view in sorted(set(views) - set(read))
    ]
    for view, table in read.items():
        sourced = {str(c.props.get("sourceColumn")) for c in model.tables[table].all("column")}
        for column in views[view]:
            if column not in sourced and (view, column) not in OMITTED:
                problems.append(f"{view}.{column} is not in the template (add it, or to OMITTED with why)")
    for view, column in OMITTED:
        if column not in views.get(view, {}):
            problems.append(f"OMITTED names {view}.{column}, which the view does not have")
        elif view in read and column in {
            str(c.props.get("sourceColumn")) for c in model.tables[read[view]].all("column")
        }:
            problems.append(f"OMITTED names {view}.{column}, which the template reads")
    related = {
        split_column(str(r.props.get("fromColumn"))) for r in model.relationships
        if split_column(str(r.props.get("toColumn"))) == CALENDAR
    }  # fmt: skip
    for view, table in read.items():
        if table == CALENDAR[0]:
            continue
        for column in model.tables[table].all("column"):
            if (
                views[view].get(str(column.props.get("sourceColumn"))) == "date"
                and (table, column.name) not in related
            ):
                problems.append(f"{table}.{column.name} is a date not related to {'.'.join(CALENDAR)}")
        if any(kind == "date" for kind in views[view].values()) and not any(t == table for t, _ in related):
            problems.append(f"{view} has a date but {table} is not related to the calendar")
    return problems


def bi_views(engine: sa.Engine) -> Views:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
                "JOIN information_schema.views v USING (table_schema, table_name) "
                "WHERE c.table_schema = 'analytics' AND c.table_name LIKE 'bi\\_%' "
                "ORDER BY c.table_name, c.ordinal_position"
            )
        ).all()
    views: Views = {}
    for view, column, kind in rows:
        views.setdefault(view, {})[column] = kind
    return views


# -- the tests -------------------------------------------------------------------------------------------


def test_the_semantic_model_is_consistent_and_the_project_files_point_at_each_other() -> None:
    model = read_model()
    assert len(model.tables) >= 9 and len(model.relationships) >= len(model.tables) - 1
    assert model_problems(model) == []
    project = json.loads((POWERBI / "BuffaloOrders.pbip").read_text())
    (artifact,) = project["artifacts"]
    report = POWERBI / artifact["report"]["path"]
    pbir = json.loads((report / "definition.pbir").read_text())
    assert (report / pbir["datasetReference"]["byPath"]["path"]).resolve() == MODEL.resolve()
    assert float(json.loads((MODEL / "definition.pbism").read_text())["version"]) >= 4.0  # TMDL
    assert (DEFINITION / "database.tmdl").read_text().startswith("database")
    pages = json.loads((report / "definition" / "pages" / "pages.json").read_text())
    for page in pages["pageOrder"]:
        assert json.loads((report / "definition" / "pages" / page / "page.json").read_text())["name"] == page


def test_the_semantic_model_reads_every_bi_view_with_its_columns_and_dates(engine: sa.Engine) -> None:
    views = bi_views(engine)
    assert {"bi_calendar", "bi_order_status", "bi_delay_worklist", "bi_stock_cover"} <= set(views)
    assert view_problems(read_model(), views) == []


def test_the_checks_name_a_renamed_column_a_new_one_a_wrong_type_and_a_broken_reference(
    engine: sa.Engine,
) -> None:
    views, model = bi_views(engine), read_model()
    changed = copy.deepcopy(views)
    changed["bi_order_status"] = {
        ("created_on" if c == "created_at" else c): t for c, t in changed["bi_order_status"].items()
    }
    changed["bi_stock_cover"]["reorder_date_sast"] = "date"
    changed["bi_late_shares"]["late"] = "text"
    problems = view_problems(model, changed)
    assert "bi_order_status.created_at: bi_order_status has no column created_at" in problems
    assert any(p.startswith("bi_order_status.created_on is not in the template") for p in problems)
    assert any(p.startswith("bi_stock_cover.reorder_date_sast is not in the template") for p in problems)
    assert any(
        p.startswith("bi_late_shares.late: dataType int64, but bi_late_shares.late is text") for p in problems
    )
    broken = copy.deepcopy(model)
    broken.relationships[0].props["toColumn"] = "bi_calendar.day"
    broken.tables["bi_calendar"].props.pop("dataCategory")
    (late_share,) = [m for m in broken.tables["bi_delivery_kpis"].all("measure") if m.name == "Late share"]
    late_share.value = (late_share.value or "").replace("orders_late", "orders_too_late")
    problems = model_problems(broken)
    assert any("toColumn bi_calendar.day is not in the model" in p for p in problems)
    assert "bi_calendar is not marked as the date table (dataCategory: Time)" in problems
    assert "measure 'Late share': bi_delivery_kpis[orders_too_late] is not in the model" in problems


def test_the_tmdl_reader_reads_objects_properties_and_expressions() -> None:
    text = "\n".join(
        [
            "table 'My table'", "\tdataCategory: Time", "",
            "\tmeasure 'A b' =", "\t\t\tSUM(x[y])", "\t\tformatString: 0", "",
            "\tcolumn d", "\t\tdataType: dateTime", "\t\tisKey", "\t\tsourceColumn: d", "",
            "\t\tannotation A = B", "",
            "\tpartition p = m", "\t\tmode: import", "\t\tsource =",
            "\t\t\t\tlet", "\t\t\t\t    S = 1", "\t\t\t\tin", "\t\t\t\t    S",
        ]
    )  # fmt: skip
    (table,) = parse_tmdl(text)
    assert (table.name, table.props) == ("My table", {"dataCategory": "Time"})
    (measure,) = table.all("measure")
    assert (measure.name, measure.value, measure.props) == ("A b", "SUM(x[y])", {"formatString": "0"})
    (column,) = table.all("column")
    assert column.props == {"dataType": "dateTime", "isKey": True, "sourceColumn": "d"}
    assert [a.name for a in column.all("annotation")] == ["A"]
    (partition,) = table.all("partition")
    assert partition.props == {"mode": "import", "source": "let\n    S = 1\nin\n    S"}
