"""Draw the leader-election state machine from `fsm.table`, so the pictures cannot drift.

    python -m scripts.draw_diagrams            # (re)write diagrams/
    python -m scripts.draw_diagrams --check    # exit 1 naming the stale files (CI)

Both drawings come from `transitions.extensions.GraphMachine` built from the same `STATES` and
`TRANSITIONS` as the runtime machine, freshly constructed, with the "current state" styling
removed so the output never depends on a state. Parallel edges between two states are merged
into one edge listing its events; internal transitions are self-loops marked `[internal]`.

Writes `state-machine.mmd` (Mermaid), `README.md` (the same Mermaid plus a legend),
`state-machine.dot` and `state-machine.svg` (Graphviz `dot`). Output is deterministic.

The text files are compared byte for byte. The SVG is compared by what it draws (node and edge
titles, texts, colours), not by coordinates: another Graphviz version lays the same graph out a
few points differently, and that is not a stale picture.
"""

import argparse
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from transitions.extensions import GraphMachine

from consul_leader.fsm.states import Event, State
from consul_leader.fsm.table import INITIAL_STATE, REACTIONS, STATES, TRANSITIONS

DIAGRAMS_DIR = Path(__file__).resolve().parents[1] / "diagrams"
MERMAID_FILE = "state-machine.mmd"
DOT_FILE = "state-machine.dot"
SVG_FILE = "state-machine.svg"
README_FILE = "README.md"
TITLE = "consul-leader state machine"
START_NODE = "start"  # the DOT marker pointing at the initial state (Mermaid writes [*])
LEADER_STYLE = "leader"
Engine = Literal["mermaid", "graphviz"]

MERMAID_LAYOUT: dict[str, str] = {"rankdir": "TB"}
MERMAID_STYLES: dict[str, dict[str, dict[str, str]]] = {
    "node": {
        "default": {"fill": "#ffffff", "stroke": "#333333", "color": "#000000"},
        LEADER_STYLE: {
            "fill": "#d8f0d8",
            "stroke": "#1b7a1b",
            "stroke-width": "3px",
            "color": "#000000",
            "font-weight": "bold",
        },
    },
    "edge": {"default": {}},
    "graph": {"default": {}},
}

DOT_LAYOUT: dict[str, str] = {
    "rankdir": "TB",
    "labelloc": "t",
    "fontname": "Helvetica",
    "fontsize": "18",
    "nodesep": "1.0",
    "ranksep": "1.0",
    "pad": "0.4",
}
DOT_STYLES: dict[str, dict[str, dict[str, str]]] = {
    "node": {
        "default": {
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "#ffffff",
            "color": "#333333",
            "fontname": "Helvetica-Bold",
            "fontsize": "14",
            "margin": "0.25,0.12",
        },
        LEADER_STYLE: {"fillcolor": "#d8f0d8", "color": "#1b7a1b", "penwidth": "3"},
    },
    "edge": {"default": {"fontname": "Helvetica", "fontsize": "11", "color": "#555555"}},
    "graph": {"default": {}},
}
MERGED_EDGE_SEPARATOR = " | "  # how transitions joins the events of merged edges

STATE_MEANINGS: dict[State, str] = {
    State.NO_SESSION: (
        "No valid session: claims nothing. The initial state, and where every lost session, "
        "expired lease and shutdown lands."
    ),
    State.CANDIDATE: "Has a session and tries `?acquire` on the key (or confirms a hold it found).",
    State.FOLLOWER: (
        "Has a session; another session holds the key. Watches it with blocking queries."
    ),
    State.LEADER: "Holds the key with its own session, within its local lease.",
}
EVENT_MEANINGS: dict[Event, str] = {
    Event.SESSION_CREATED: "a new session exists",
    Event.SESSION_LOST: (
        "renew answered 404, `?acquire` said the session is invalid, or the session is gone"
    ),
    Event.LEASE_EXPIRED: "no renew was confirmed before the local lease deadline (send time + TTL)",
    Event.LOCK_ACQUIRED: "`?acquire` answered `true`",
    Event.LOCK_DELAYED: "`?acquire` answered `false` on a key with no holder: lock-delay in force",
    Event.LOCK_HELD_BY_US: "observed: the key's `Session` is ours",
    Event.LOCK_HELD_BY_OTHER: "observed: the key's `Session` is another session",
    Event.LOCK_FREE: "observed: the key exists with no `Session`",
    Event.KEY_MISSING: "observed: the key does not exist",
    Event.LEASE_RENEWED: "Consul confirmed a renew within the local lease",
    Event.BOUND_CHECK_MISSING: (
        "`session/create` refused: the lease check it binds to is missing or critical"
    ),
    Event.LEASE_CHECK_PASSED: "the lease check a new session binds to was registered and passed",
    Event.TARGETS_FOUND: "the target services to publish for are known (or changed)",
    Event.TARGET_GONE: "a target service stayed deregistered past its grace (one renew interval)",
    Event.REPLICA_PUBLISHED: "Consul shows the non-primary role on every target",
    Event.PRIMARY_PUBLISHED: "Consul shows the primary role on every target",
    Event.PUBLISH_REFUSED: "Consul denied writing our role (ACL)",
    Event.OTHER_PRIMARY_SEEN: "before publishing, another instance is still a passing primary",
    Event.OTHER_PRIMARY_WAIT_OVER: (
        "it still is when the bounded wait ends (the old role check's TTL plus a margin)"
    ),
    Event.STALE_PRIMARY_SEEN: (
        "another passing primary's session is gone (seen after a grace of TTL/10): it leads "
        "nothing"
    ),
    # Switchover and priorities (issue 12).
    Event.SWITCHOVER_REQUESTED: (
        "`POST /switchover` was accepted: publish replica, then hand the key over and hold off"
    ),
    Event.LEAD_EXCLUDED: (
        "may not lead now: priority 0, its own hold-off, or a fresh hint naming another instance"
    ),
    Event.HOLD_OFF_OVER: "the hold-off (or the switchover hint it waited out) is over",
    Event.HIGHER_PRIORITY_SEEN: (
        "healthy peers of higher priority are listed: `?acquire` after a bounded delay"
    ),
    Event.SHUTDOWN: "SIGTERM or SIGINT (or Consul refused our configuration): leave cleanly",
    # The health gate (CONSUL_LEADER_HEALTH_GATE).
    Event.APPLICATION_CRITICAL: (
        "a target's checks, or its node or service maintenance, are critical (or session "
        "create was refused because its alias check is): leave the election"
    ),
    Event.APPLICATION_HEALTHY: "every target is healthy (again): compete like a newcomer",
}
REACTION_MEANINGS: dict[str, str] = {
    "retry_acquire": "try `?acquire` again (after the lock-delay wait, for `lock_delayed`, or "
                     "the priority delay, for `higher_priority_seen`)",
    "vouch_replica": (
        "pass the lease check, and the role checks once Consul shows the replica role"
    ),
    "vouch_lease": "pass the lease check, and ask for the lock to be confirmed",
    "vouch_primary": "the lock is confirmed ours: pass the role checks, keep the key's value",
    "prepare_session": "register and pass the lease check (or create at once without checks)",
    "create_session": "create the session, bound to the lease check",
    "adopt_targets": "the health checks follow the target services",
    "mark_published": "record the published role (`/primary` answers 200 once it is primary)",
    "await_other_primary": "start the bounded wait for the other primary to go",
    "publish_over_other_primary": (
        "publish the primary role anyway, count it, log an error naming the other instance"
    ),
    "evict_stale_primaries": (
        "deregister them from the catalog, count it, log an error naming them; ours goes on "
        "once Consul no longer lists them"
    ),
    "await_healthy": "create no session until the health gate reports the application healthy",
}
STATE_EFFECTS: dict[State, str] = {
    State.LEADER: (
        "leader file written and promote hook run at once (they follow the lock); the primary "
        "role published once no other instance is a passing primary (or the bounded wait is "
        "over)"
    ),
    State.CANDIDATE: "not primary: replica label (when configured), no leader file",
    State.FOLLOWER: "not primary: replica label (when configured), no leader file",
    State.NO_SESSION: (
        "not primary: replica label (when configured), no leader file; on shutdown, "
        "release the key, then destroy the session"
    ),
}


def build_machine(engine: Engine) -> GraphMachine:
    """A fresh GraphMachine over the runtime table, in its initial state."""
    return GraphMachine(
        states=STATES,
        transitions=TRANSITIONS,
        initial=INITIAL_STATE.value,
        auto_transitions=False,
        show_auto_transitions=False,
        show_conditions=True,
        graph_engine=engine,
        title=TITLE,
    )


def styled_graph(engine: Engine, layout: dict[str, str], styles: dict[str, Any]) -> Any:
    """The machine's graph with our layout and styles, and without "current state" styling."""
    machine = build_machine(engine)
    # Instance attributes shadow GraphMachine's shared class-level dicts without mutating them.
    machine.machine_attributes = layout
    machine.style_attributes = styles
    graph = machine.model_graphs[id(machine)]
    graph.reset_styling()  # forget the active/previous state
    graph.set_node_style(State.LEADER.value, LEADER_STYLE)
    return machine.get_graph()


def mermaid_source() -> str:
    lines = styled_graph("mermaid", MERMAID_LAYOUT, MERMAID_STYLES).source.split("\n")
    # transitions writes a bare title as the front-matter; Mermaid ignores that, so name it.
    # JSON quoting is valid YAML and keeps a title with ": " in it one string.
    if lines[:3] != ["---", TITLE, "---"]:
        raise RuntimeError(f"unexpected Mermaid front-matter from transitions: {lines[:3]}")
    lines[1] = f"title: {json.dumps(TITLE)}"
    return "\n".join(line.rstrip() for line in lines) + "\n"


def dot_source() -> str:
    graph = styled_graph("graphviz", DOT_LAYOUT, DOT_STYLES)
    # One event per line reads better than "a | b | c" on a merged edge.
    graph.body = [line.replace(MERGED_EDGE_SEPARATOR, r"\n") for line in graph.body]
    graph.node(START_NODE, label="", shape="point", width="0.18", fillcolor="#333333")
    graph.edge(START_NODE, INITIAL_STATE.value, label="")
    source: str = graph.source
    return source


def svg_from_dot(dot: str, dot_binary: str) -> str:
    done = subprocess.run(
        [dot_binary, "-Tsvg"], input=dot, capture_output=True, text=True, check=True
    )
    return done.stdout


def readme_source(mermaid: str) -> str:
    states = "\n".join(f"- **{s.value}**: {STATE_MEANINGS[s]}" for s in State)
    events = "\n".join(f"- `{e.value}`: {EVENT_MEANINGS[e]}" for e in Event)
    effects = "\n".join(f"- **{s.value}**: {STATE_EFFECTS[s]}." for s in State)
    reactions = "\n".join(
        f"- `{e.value}` in {s.value}: **{name}**, {REACTION_MEANINGS[name]}"
        for (s, e), name in sorted(REACTIONS.items(), key=lambda item: (
            list(State).index(item[0][0]), list(Event).index(item[0][1]))))
    return f"""# State machine

<!-- Generated by `python -m scripts.draw_diagrams` from fsm/table.py. Do not edit. -->

```mermaid
{mermaid.rstrip()}
```

Also drawn by Graphviz: [state-machine.svg](state-machine.svg) (source: `state-machine.dot`).

## Reading the diagram

- An edge lists every event that takes that path, separated by `|`.
- `[internal]`: the state does not change and its entry effects are not re-applied; the
  pair's reaction runs instead (listed below), if it has one.
- `[!stopping]`: refused once shutdown began.
- An event not drawn from a state is **refused**: the state is unchanged, the refusal is
  logged and counted, nothing is raised.
- Every accepted transition is logged as one line (from, to, event, reason) and counted.

## States

{states}

## Events

{events}

## Reactions of internal transitions

{reactions}

## Side effects of each state

Applied on entry and re-applied whenever they drift (e.g. Nomad re-registers the service).

{effects}

Leaving Leader removes the leader file and runs the demote hook first, before the effects of
the next state.
"""


def render_text() -> dict[str, str]:
    """Every text artefact, by file name."""
    _check_legend_is_complete()
    mermaid = mermaid_source()
    return {MERMAID_FILE: mermaid, README_FILE: readme_source(mermaid), DOT_FILE: dot_source()}


def render_all(dot_binary: str) -> dict[str, str]:
    files = render_text()
    files[SVG_FILE] = svg_from_dot(files[DOT_FILE], dot_binary)
    return files


def write_all(out_dir: Path, dot_binary: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_all(dot_binary).items():
        path = out_dir / name
        path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def stale_files(out_dir: Path, dot_binary: str) -> list[str]:
    """Names of the files in `out_dir` that differ from what would be written now."""
    stale = []
    for name, wanted in render_all(dot_binary).items():
        same = _same_svg if name == SVG_FILE else _same_text
        path = out_dir / name
        if not path.is_file() or not same(path.read_text(encoding="utf-8"), wanted):
            stale.append(name)
    return stale


def find_dot() -> str:
    """Path of Graphviz `dot`; without it, say how to get it and exit 2 (not "stale")."""
    dot = shutil.which("dot")
    if dot is None:
        print(
            "Graphviz `dot` not found on PATH: it renders diagrams/state-machine.svg. "
            "Install it (Debian: apt-get install graphviz).",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return dot


def svg_signature(svg: str) -> list[tuple[str, ...]]:
    """What an SVG from Graphviz draws, without coordinates: per node/edge/graph group, its
    class, title, texts and the colours of its shapes."""
    root = ET.fromstring(svg)
    signature = []
    for group in root.iter(f"{_SVG}g"):
        kind = group.get("class", "")
        if kind not in {"graph", "node", "edge"}:
            continue
        title = group.findtext(f"{_SVG}title", default="")
        texts = tuple(text.text or "" for text in group.iter(f"{_SVG}text"))
        paints = tuple(sorted(_paints(group)))
        signature.append((kind, title, *texts, *paints))
    return sorted(signature)


_SVG = "{http://www.w3.org/2000/svg}"


def _paints(group: ET.Element) -> set[str]:
    shapes = ("path", "polygon", "ellipse", "polyline")
    found = set()
    for shape in shapes:
        for element in group.iter(f"{_SVG}{shape}"):
            found.add(
                f"{shape}:{element.get('fill')}:{element.get('stroke')}:"
                f"{element.get('stroke-width', '1')}"
            )
    return found


def _same_text(current: str, wanted: str) -> bool:
    return current == wanted


def _same_svg(current: str, wanted: str) -> bool:
    try:
        return current == wanted or svg_signature(current) == svg_signature(wanted)
    except ET.ParseError:
        return False


def _check_legend_is_complete() -> None:
    legends: Sequence[tuple[str, dict[Any, str], Sequence[Any]]] = [
        ("STATE_MEANINGS", STATE_MEANINGS, list(State)),
        ("STATE_EFFECTS", STATE_EFFECTS, list(State)),
        ("EVENT_MEANINGS", EVENT_MEANINGS, list(Event)),
        ("REACTION_MEANINGS", REACTION_MEANINGS, sorted(set(REACTIONS.values()))),
    ]
    for name, legend, members in legends:
        missing = [str(m) for m in members if m not in legend]
        if missing:
            raise RuntimeError(f"{name} in scripts/draw_diagrams.py lacks {', '.join(missing)}")


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--out", type=Path, default=DIAGRAMS_DIR, help="default: diagrams/")
    args = parser.parse_args(argv)
    dot = find_dot()
    if not args.check:
        for path in write_all(args.out, dot):
            out(f"wrote {path}")
        return 0
    stale = stale_files(args.out, dot)
    for name in stale:
        out(f"stale: {args.out / name} (run: python -m scripts.draw_diagrams)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
