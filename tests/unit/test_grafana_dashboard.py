"""deploy/grafana/consul-leader.json: a dashboard Grafana can import, with PromQL that parses.

* Schema: the dashboard declares `schemaVersion`; the rules for that version below are the
  required fields and enumerations of Grafana's dashboard schema of that time (schema 39:
  `packages/grafana-schema/src/raw/dashboard/x/dashboard_types.gen.ts` and
  `kinds/dashboard/dashboard_kind.cue` of Grafana's repository; later Grafana versions migrate
  it forward on load). A version without rules here fails the test rather than passing
  unchecked.
* House rules on top: unique panel ids, no overlapping panels, every panel titled, every
  query with a refId and an expression, every metric selector filtered by `$service`.
* PromQL: every expression, Grafana's variables replaced by sample values, is written as a
  recording rule into a temporary rule file for `promtool check rules`.

The metrics it uses are compared with a live sidecar's in
tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "consul-leader.json"
GRID_COLUMNS = 24

# Grafana's own variables, with values a real dashboard query could get (longest first, so
# $__range_s is replaced before $__range).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval_ms": "15000",
    "$__interval": "15s",
    "$__range_ms": "21600000",
    "$__range_s": "21600",
    "$__range": "6h",
}
USER_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
METRIC_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{")

# --------------------------------------------------------------------------- schema 39

VARIABLE_TYPES = {"query", "adhoc", "groupby", "constant", "datasource", "interval", "textbox",
                  "custom", "system"}
FIELD_COLOR_MODES = {"thresholds", "palette-classic", "palette-classic-by-name",
                     "continuous-GrYlRd", "continuous-RdYlGr", "continuous-BlYlRd",
                     "continuous-YlRd", "continuous-BlPu", "continuous-YlBl", "continuous-blues",
                     "continuous-reds", "continuous-greens", "continuous-purples", "fixed",
                     "shades"}
MAPPING_TYPES = {"value", "range", "regex", "special"}
Problems = list[str]


def _need(problems: Problems, where: str, node: Any, field: str,
          check: Callable[[Any], bool], what: str) -> None:
    """`field` must be present in `node` and pass `check`."""
    if not isinstance(node, dict) or field not in node:
        problems.append(f"{where}: required field {field!r} is missing")
    elif not check(node[field]):
        problems.append(f"{where}.{field}: expected {what}, got {node[field]!r}")


def _may(problems: Problems, where: str, node: dict[str, Any], field: str,
         check: Callable[[Any], bool], what: str) -> None:
    """`field` is optional, but must pass `check` when present."""
    if field in node and not check(node[field]):
        problems.append(f"{where}.{field}: expected {what}, got {node[field]!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _datasource_ref(problems: Problems, where: str, ref: Any) -> None:
    if not isinstance(ref, dict):
        problems.append(f"{where}: a data source reference must be an object")
        return
    for field in ("type", "uid"):
        _may(problems, where, ref, field, _is_str, "a string")


def _grid_pos(problems: Problems, where: str, grid: Any) -> None:
    before = len(problems)
    for field in "hwxy":
        _need(problems, where, grid, field, _is_int, "an integer")
    if len(problems) > before:
        return
    if not (grid["h"] > 0 and 0 < grid["w"] <= GRID_COLUMNS and 0 <= grid["x"] < GRID_COLUMNS
            and grid["y"] >= 0):
        problems.append(f"{where}: outside the grid (h > 0, 0 < w <= 24, 0 <= x < 24, y >= 0)")
    elif grid["x"] + grid["w"] > GRID_COLUMNS:
        problems.append(f"{where}: x + w is beyond the grid's 24 columns")


def _thresholds(problems: Problems, where: str, thresholds: Any) -> None:
    _need(problems, where, thresholds, "mode", lambda v: v in ("absolute", "percentage"),
          "absolute or percentage")
    _need(problems, where, thresholds, "steps", _is_list, "a list")
    for index, step in enumerate(thresholds.get("steps", []) if _is_dict(thresholds) else []):
        _need(problems, f"{where}.steps[{index}]", step, "color", _is_str, "a string")
        _need(problems, f"{where}.steps[{index}]", step, "value",
              lambda v: v is None or _is_number(v), "a number or null")


def _mappings(problems: Problems, where: str, mappings: list[Any]) -> None:
    for index, mapping in enumerate(mappings):
        _need(problems, f"{where}[{index}]", mapping, "type", lambda v: v in MAPPING_TYPES,
              f"one of {sorted(MAPPING_TYPES)}")
        _need(problems, f"{where}[{index}]", mapping, "options", _is_dict, "an object")


def _field_config(problems: Problems, where: str, config: Any) -> None:
    _need(problems, where, config, "defaults", _is_dict, "an object")
    _need(problems, where, config, "overrides", _is_list, "a list")
    if not _is_dict(config) or not _is_dict(config.get("defaults")):
        return
    defaults, at = config["defaults"], f"{where}.defaults"
    for field in ("unit", "displayName", "noValue"):
        _may(problems, at, defaults, field, _is_str, "a string")
    for field in ("decimals", "min", "max"):
        _may(problems, at, defaults, field, _is_number, "a number")
    _may(problems, at, defaults, "custom", _is_dict, "an object")
    if "color" in defaults:
        _need(problems, f"{at}.color", defaults["color"], "mode",
              lambda v: v in FIELD_COLOR_MODES, "a field color mode")
    if "thresholds" in defaults:
        _thresholds(problems, f"{at}.thresholds", defaults["thresholds"])
    if _is_list(defaults.get("mappings")):
        _mappings(problems, f"{at}.mappings", defaults["mappings"])
    for index, override in enumerate(config.get("overrides") or []):
        _need(problems, f"{where}.overrides[{index}]", override, "matcher", _is_dict,
              "an object")
        _need(problems, f"{where}.overrides[{index}]", override, "properties", _is_list,
              "a list")


def _panel(problems: Problems, where: str, panel: Any) -> None:
    _need(problems, where, panel, "type", lambda v: _is_str(v) and v != "",
          "a non-empty string")
    if not _is_dict(panel):
        return
    if panel.get("type") == "row":
        _need(problems, where, panel, "collapsed", lambda v: isinstance(v, bool), "a boolean")
        _need(problems, where, panel, "id", _is_int, "an integer")
        _need(problems, where, panel, "panels", _is_list, "a list")
        for index, child in enumerate(panel.get("panels") or []):
            _panel(problems, f"{where}.panels[{index}]", child)
    _may(problems, where, panel, "id", _is_int, "an integer")
    _may(problems, where, panel, "title", _is_str, "a string")
    _may(problems, where, panel, "description", _is_str, "a string")
    _may(problems, where, panel, "transparent", lambda v: isinstance(v, bool), "a boolean")
    _may(problems, where, panel, "options", _is_dict, "an object")
    _may(problems, where, panel, "targets", lambda v: _is_list(v) and all(map(_is_dict, v)),
         "a list of objects")
    if "gridPos" in panel:
        _grid_pos(problems, f"{where}.gridPos", panel["gridPos"])
    if "datasource" in panel:
        _datasource_ref(problems, f"{where}.datasource", panel["datasource"])
    if "fieldConfig" in panel:
        _field_config(problems, f"{where}.fieldConfig", panel["fieldConfig"])
    for index, step in enumerate(panel.get("transformations") or []):
        _need(problems, f"{where}.transformations[{index}]", step, "id", _is_str, "a string")
        _need(problems, f"{where}.transformations[{index}]", step, "options", lambda v: True,
              "anything")


def _variable(problems: Problems, where: str, variable: Any) -> None:
    _need(problems, where, variable, "name", _is_str, "a string")
    _need(problems, where, variable, "type", lambda v: v in VARIABLE_TYPES,
          f"one of {sorted(VARIABLE_TYPES)}")
    if not _is_dict(variable):
        return
    _may(problems, where, variable, "hide", lambda v: v in (0, 1, 2), "0, 1 or 2")
    _may(problems, where, variable, "refresh", lambda v: v in (0, 1, 2), "0, 1 or 2")
    _may(problems, where, variable, "sort", lambda v: _is_int(v) and 0 <= v <= 8, "0 to 8")
    if "datasource" in variable:
        _datasource_ref(problems, f"{where}.datasource", variable["datasource"])


def _annotation(problems: Problems, where: str, annotation: Any) -> None:
    _need(problems, where, annotation, "name", _is_str, "a string")
    _need(problems, where, annotation, "enable", lambda v: isinstance(v, bool), "a boolean")
    _need(problems, where, annotation, "iconColor", _is_str, "a string")
    _need(problems, where, annotation, "datasource", _is_dict, "a data source reference")


def schema_39_problems(dashboard: dict[str, Any]) -> Problems:
    """What Grafana's schema 39 would reject in `dashboard`, one sentence each."""
    problems: Problems = []
    for field in ("title", "uid", "timezone", "refresh", "description", "weekStart"):
        _may(problems, "dashboard", dashboard, field, _is_str, "a string")
    _may(problems, "dashboard", dashboard, "uid", lambda v: 8 <= len(v) <= 40, "8 to 40 chars")
    _may(problems, "dashboard", dashboard, "tags", lambda v: _is_list(v) and all(
        map(_is_str, v)), "a list of strings")
    _may(problems, "dashboard", dashboard, "editable", lambda v: isinstance(v, bool),
         "a boolean")
    _may(problems, "dashboard", dashboard, "graphTooltip", lambda v: v in (0, 1, 2),
         "0, 1 or 2")
    if "time" in dashboard:
        for field in ("from", "to"):
            _need(problems, "dashboard.time", dashboard["time"], field, _is_str, "a string")
    _may(problems, "dashboard", dashboard, "panels", _is_list, "a list")
    for index, panel in enumerate(dashboard.get("panels") or []):
        _panel(problems, f"panels[{index}]", panel)
    templating = dashboard.get("templating", {})
    for index, variable in enumerate(templating.get("list") or []):
        _variable(problems, f"templating.list[{index}]", variable)
    annotations = dashboard.get("annotations", {})
    for index, annotation in enumerate(annotations.get("list") or []):
        _annotation(problems, f"annotations.list[{index}]", annotation)
    return problems


SCHEMAS: dict[int, Callable[[dict[str, Any]], Problems]] = {39: schema_39_problems}


def schema_problems(dashboard: Any) -> Problems:
    if not _is_dict(dashboard):
        return ["the dashboard is not a JSON object"]
    version = dashboard.get("schemaVersion")
    if not _is_int(version):
        return [f"schemaVersion is required and must be an integer, got {version!r}"]
    if version not in SCHEMAS:
        return [f"schemaVersion {version}: no rules for it here (known: {sorted(SCHEMAS)})"]
    return SCHEMAS[version](dashboard)


# --------------------------------------------------------------------------- reading it


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('id')} ({panel.get('title')}) {target.get('refId')}", \
                target.get("expr", "")


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    texts = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            texts.append(query.get("query", "") if isinstance(query, dict) else str(query))
    return texts


def as_promql(expression: str) -> str:
    """`expression` with Grafana's variables replaced by values it could take."""
    for name, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(name, value)
    return USER_VARIABLE.sub(".*", expression)  # user variables sit in regex matchers here


def metrics_used(dashboard: dict[str, Any]) -> set[str]:
    """Metric names in the panels' selectors and the variables' label_values() queries."""
    names = {name for _, expression in queries(dashboard)
             for name in METRIC_SELECTOR.findall(expression)}
    for text in variable_queries(dashboard):
        names.update(re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)", text))
    return names


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found on PATH: install it (Debian/Ubuntu: apt-get install "
                    "prometheus) - CI installs it, so this check must not be skipped")
    return binary


def promtool_check_expressions(expressions: list[str],
                               folder: Path) -> subprocess.CompletedProcess[str]:
    rules = [{"record": f"dashboard:query_{index}", "expr": expression}
             for index, expression in enumerate(expressions)]
    path = folder / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


# --------------------------------------------------------------------------- the tests


def test_dashboard_is_valid_for_the_schema_version_it_declares() -> None:
    dashboard = load_dashboard()

    assert dashboard["schemaVersion"] == 39
    assert schema_problems(dashboard) == []


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.pop("schemaVersion"), "schemaVersion is required"),
    (lambda d: d.update(schemaVersion=12), "no rules for it here"),
    (lambda d: d["panels"][1].pop("type"), "required field 'type' is missing"),
    (lambda d: d["panels"][1]["gridPos"].update(w=30), "outside the grid"),
    (lambda d: d["panels"][1]["gridPos"].pop("h"), "required field 'h'"),
    (lambda d: d["panels"][1]["fieldConfig"].pop("overrides"), "'overrides' is missing"),
    (lambda d: d["panels"][0].pop("collapsed"), "'collapsed' is missing"),
    (lambda d: d["templating"]["list"][1].update(type="dropdown"), "templating.list[1].type"),
    (lambda d: d["panels"][1]["fieldConfig"]["defaults"]["thresholds"].update(mode="log"),
     "absolute or percentage"),
], ids=["no version", "unknown version", "panel type", "grid width", "grid height",
        "field config", "row", "variable type", "thresholds"])
def test_schema_check_finds_what_grafana_would_reject(change: Callable[[dict[str, Any]], Any],
                                                       problem: str) -> None:
    dashboard = load_dashboard()
    change(dashboard)

    assert any(problem in found for found in schema_problems(dashboard)), \
        schema_problems(dashboard)


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = list(all_panels(load_dashboard()))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]


def test_every_panel_is_titled_and_queries_prometheus() -> None:
    for panel in all_panels(load_dashboard()):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['id']} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"panel {panel['id']}: refIds {ref_ids}"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['id']} {target['refId']}: no expr"


def test_the_election_variable_filters_every_selector() -> None:
    for where, expression in queries(load_dashboard()):
        selectors = re.findall(r"[a-zA-Z_:][\w:]*\s*\{[^}]*\}", expression)
        assert selectors, f"{where}: no metric selector"
        unfiltered = [s for s in selectors if 'service=~"$service"' not in s]
        assert unfiltered == [], f"{where}: not filtered by $service: {unfiltered}"


def test_every_expression_parses(tmp_path: Path) -> None:
    expressions = [as_promql(expression) for _, expression in queries(load_dashboard())]
    assert len(expressions) >= 10

    result = promtool_check_expressions(expressions, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(expressions)} rules found" in result.stdout


def test_the_expression_check_can_fail(tmp_path: Path) -> None:
    broken = as_promql('sum by (service) (rate(consul_leader_is_leader{service=~"$service"}'
                       "[$__rate_interval])")

    result = promtool_check_expressions([broken], tmp_path)

    assert result.returncode != 0


def test_metrics_used_are_the_sidecars_own() -> None:
    used = metrics_used(load_dashboard())

    assert {"consul_leader_is_leader", "consul_leader_transitions_total",
            "consul_leader_session_renew_duration_seconds_bucket",
            "consul_leader_fencing_token", "consul_leader_consul_requests_total"} <= used
    assert all(name.startswith("consul_leader_") for name in used), sorted(used)
