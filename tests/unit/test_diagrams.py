"""The committed diagrams are current and draw exactly the machine's table."""

import re
import shutil
from pathlib import Path

import pytest

from consul_leader.fsm import Event, State
from consul_leader.fsm.table import INITIAL_STATE, INTERNAL_TRANSITIONS, edges
from scripts import draw_diagrams as dd

DIAGRAMS = dd.DIAGRAMS_DIR
STATE_NAMES = {state.value for state in State}
TABLE_EDGES = {(s.value, d.value, e.value) for s, d, e in edges()}
INTERNAL = {(s.value, e.value) for s, e in INTERNAL_TRANSITIONS}

MERMAID_NODE = re.compile(r'^\s*state "(?P<label>[^"]+)" as (?P<name>\w+)$')
MERMAID_EDGE = re.compile(r"^\s*(?P<src>\[\*\]|\w+) --> (?P<dst>\w+)(?:: (?P<label>.*))?$")
DOT_NODE = re.compile(r"^\t(?P<name>\w+) \[(?P<attrs>.*)\]$")
DOT_EDGE = re.compile(r'^\t(?P<src>\w+) -> (?P<dst>\w+) \[label=(?P<label>"[^"]*"|\w+)\]$')


def dot_binary() -> str:
    dot = shutil.which("dot")
    if dot is None:
        pytest.fail(
            "Graphviz `dot` is not installed, so diagrams/state-machine.svg cannot be checked. "
            "Install it (Debian: apt-get install graphviz); CI must have it."
        )
    return dot


def edges_from_labels(labelled: list[tuple[str, str, str]], separator: str) -> set[tuple[str, ...]]:
    """(src, dst, event) for every event of every labelled edge; checks the [internal] marks."""
    found: set[tuple[str, ...]] = set()
    for src, dst, label in labelled:
        for entry in label.split(separator):
            event = entry.split(" [")[0]
            assert ("[internal]" in entry) == ((src, event) in INTERNAL), (src, dst, entry)
            found.add((src, dst, event))
    return found


# (1) Not stale.


def test_text_diagrams_are_current() -> None:
    for name, wanted in dd.render_text().items():
        committed = (DIAGRAMS / name).read_text(encoding="utf-8")
        assert committed == wanted, f"{name} is stale: run python -m scripts.draw_diagrams"


def test_svg_is_current() -> None:
    assert dd.stale_files(DIAGRAMS, dot_binary()) == []


def test_rendering_is_deterministic() -> None:
    dot = dot_binary()
    assert dd.render_all(dot) == dd.render_all(dot)


def test_check_names_stale_and_missing_files(tmp_path: Path) -> None:
    dot = dot_binary()
    dd.write_all(tmp_path, dot)
    assert dd.main(["--check", "--out", str(tmp_path)], out=lambda _: None) == 0

    (tmp_path / dd.MERMAID_FILE).write_text("stateDiagram-v2\n")
    (tmp_path / dd.README_FILE).unlink()
    printed: list[str] = []
    assert dd.main(["--check", "--out", str(tmp_path)], out=printed.append) == 1
    assert len(printed) == 2
    assert dd.MERMAID_FILE in printed[0] or dd.MERMAID_FILE in printed[1]
    assert any(dd.README_FILE in line for line in printed)


def test_svg_from_another_layout_is_current_but_a_changed_drawing_is_stale(
    tmp_path: Path,
) -> None:
    dot = dot_binary()
    dd.write_all(tmp_path, dot)
    svg = tmp_path / dd.SVG_FILE
    original = svg.read_text()

    svg.write_text(re.sub(r'(x|y)="(-?[\d.]+)"', r'\1="1\2"', original))  # moved, same drawing
    assert dd.stale_files(tmp_path, dot) == []

    svg.write_text(original.replace(">lock_held_by_other<", ">lock_stolen<"))
    assert dd.stale_files(tmp_path, dot) == [dd.SVG_FILE]


# (2) Mermaid draws the table.


def mermaid_lines() -> list[str]:
    return (DIAGRAMS / dd.MERMAID_FILE).read_text().splitlines()


def test_mermaid_nodes_are_the_states() -> None:
    nodes = [m.groupdict() for line in mermaid_lines() if (m := MERMAID_NODE.match(line))]
    assert {n["name"] for n in nodes} == STATE_NAMES
    assert all(n["label"] == n["name"] for n in nodes)


def test_mermaid_edges_are_the_transitions() -> None:
    matches = [m for line in mermaid_lines() if (m := MERMAID_EDGE.match(line))]
    starts = [(m["src"], m["dst"]) for m in matches if m["src"] == "[*]"]
    labelled = [(m["src"], m["dst"], m["label"]) for m in matches if m["src"] != "[*]"]

    assert starts == [("[*]", INITIAL_STATE.value)]
    assert edges_from_labels(labelled, " | ") == TABLE_EDGES
    assert len(labelled) == len({(src, dst) for src, dst, _ in labelled})  # merged, no repeats


def test_mermaid_has_a_real_title_and_no_current_state_styling() -> None:
    text = (DIAGRAMS / dd.MERMAID_FILE).read_text()
    assert text.startswith(f'---\ntitle: "{dd.TITLE}"\n---\nstateDiagram-v2\n')
    assert "s_active" not in text
    assert "s_previous" not in text
    assert f"Class {State.LEADER.value} s_leader" in text


def test_readme_embeds_the_same_mermaid_and_explains_every_state_and_event() -> None:
    readme = (DIAGRAMS / dd.README_FILE).read_text()
    mermaid = (DIAGRAMS / dd.MERMAID_FILE).read_text()
    assert f"```mermaid\n{mermaid}```\n" in readme
    for state in State:
        assert f"- **{state.value}**: " in readme
    for event in Event:
        assert f"- `{event.value}`: " in readme


# (3) DOT draws the table.


def dot_lines() -> list[str]:
    return (DIAGRAMS / dd.DOT_FILE).read_text().splitlines()


def test_dot_nodes_are_the_states_plus_the_start_marker() -> None:
    defaults = {"graph", "node", "edge"}  # attribute statements, not nodes
    nodes = {
        m["name"]: m["attrs"]
        for line in dot_lines()
        if (m := DOT_NODE.match(line)) and m["name"] not in defaults
    }
    assert set(nodes) == STATE_NAMES | {dd.START_NODE}
    assert "shape=point" in nodes[dd.START_NODE]
    assert "penwidth" in nodes[State.LEADER.value]  # Leader stands out


def test_dot_edges_are_the_transitions() -> None:
    matches = [m for line in dot_lines() if (m := DOT_EDGE.match(line))]
    starts = [(m["src"], m["dst"]) for m in matches if m["src"] == dd.START_NODE]
    labelled = [
        (m["src"], m["dst"], m["label"].strip('"')) for m in matches if m["src"] != dd.START_NODE
    ]

    assert starts == [(dd.START_NODE, INITIAL_STATE.value)]
    assert edges_from_labels(labelled, r"\n") == TABLE_EDGES
    assert len(labelled) == len({(src, dst) for src, dst, _ in labelled})


def test_svg_draws_the_dot_nodes_and_edges() -> None:
    signature = dd.svg_signature((DIAGRAMS / dd.SVG_FILE).read_text())
    titles = {(kind, title) for kind, title, *_ in signature}
    expected_edges = {f"{src}->{dst}" for src, dst, _ in TABLE_EDGES}
    expected_edges.add(f"{dd.START_NODE}->{INITIAL_STATE.value}")
    assert {t for kind, t in titles if kind == "node"} == STATE_NAMES | {dd.START_NODE}
    assert {t for kind, t in titles if kind == "edge"} == expected_edges
