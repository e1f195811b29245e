"""The whole definitions graph against a stored snapshot, so a lineage change shows in review.

After an intended change, regenerate with:
    BUFFALO_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py
and commit tests/snapshots/definitions.json with the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def graph_of_definitions() -> dict[str, Any]:
    from buffalo_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec = node.to_asset_spec() if hasattr(node, "to_asset_spec") else None
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "table": node.metadata.get("dagster/table_name"),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "freshness": spec.freshness_policy is not None if spec is not None else None,
            "pools": sorted(node.pools or ()),
            "checks": sorted(check.name for check in graph.asset_check_keys if check.asset_key == key),
        }
    return {
        "assets": assets,
        "jobs": sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
        "resources": sorted(defs.resources or {}),
    }


def test_the_definitions_graph_matches_the_snapshot(dagster_home: Path) -> None:
    current = graph_of_definitions()
    if os.environ.get("BUFFALO_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    stored = json.loads(SNAPSHOT.read_text())
    assert current == stored, "the definitions graph changed; regenerate the snapshot if intended"
