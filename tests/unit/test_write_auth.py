"""Who may use the HTTP write paths (issue 12): the gate alone, then through the routes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from consul_leader.adapters.observability.status_server import (
    Request,
    Routes,
    StatusSnapshot,
    WritePaths,
)
from consul_leader.adapters.observability.write_auth import BearerGate

TOKEN = "s3cret-bearer-token"


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


def test_writes_are_off_unless_enabled(tmp_path: Path) -> None:
    denial = BearerGate(False, str(token_file(tmp_path))).check(f"Bearer {TOKEN}")
    assert denial is not None and denial.status == 403
    assert denial.message == "write paths are disabled (set CONSUL_LEADER_HTTP_WRITES=on)"


def test_without_a_token_file_enabled_writes_are_open() -> None:
    assert BearerGate(True, None).check("") is None


def test_missing_wrong_and_right_tokens(tmp_path: Path) -> None:
    gate = BearerGate(True, str(token_file(tmp_path)))
    for header in ("", "Basic dXNlcjpwYXNz", "Bearer "):
        denial = gate.check(header)
        assert denial is not None and denial.status == 401, header
        assert dict(denial.headers)["WWW-Authenticate"].startswith("Bearer")
    wrong = gate.check("Bearer nope")
    assert wrong is not None and wrong.status == 403 and TOKEN not in wrong.message
    assert gate.check(f"Bearer {TOKEN}") is None
    assert gate.check(f"bearer   {TOKEN}  ") is None


def test_a_rotated_token_applies_at_the_next_request(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    gate = BearerGate(True, str(path))
    assert gate.check(f"Bearer {TOKEN}") is None
    path.write_text("the-new-token-is-longer\n")
    os.utime(path, ns=(1, 1))  # a different stamp, whatever the file system's resolution
    assert gate.check(f"Bearer {TOKEN}") is not None
    assert gate.check("Bearer the-new-token-is-longer") is None


def test_an_unreadable_or_emptied_file_fails_closed(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    gate = BearerGate(True, str(path))
    path.write_text("\n")
    os.utime(path, ns=(2, 2))
    denial = gate.check(f"Bearer {TOKEN}")
    assert denial is not None and denial.status == 503
    path.unlink()
    denial = gate.check(f"Bearer {TOKEN}")
    assert denial is not None and denial.status == 503


# -- through the routes ----------------------------------------------------------------------


@dataclass(frozen=True)
class FakeAnswer:
    status: int
    message: str = ""
    document: dict[str, Any] | None = None


@dataclass
class FakeSwitchover:
    answer: FakeAnswer
    asked: list[tuple[str | None, str | None]] = field(default_factory=list)

    def __call__(self, to: str | None, hold_off: str | None) -> FakeAnswer:
        self.asked.append((to, hold_off))
        return self.answer


def snapshot() -> StatusSnapshot:
    return StatusSnapshot("Leader", 0.0, "s1", "k", 1, "s1", 1.0, 10.0, True)


def routes(tmp_path: Path, answer: FakeAnswer) -> tuple[Routes, FakeSwitchover]:
    switchover = FakeSwitchover(answer)
    gate = BearerGate(True, str(token_file(tmp_path)))
    return Routes(CollectorRegistry(), snapshot, WritePaths(gate.check, switchover)), switchover


def post(path: str, authorization: str = f"Bearer {TOKEN}", method: str = "POST") -> Request:
    return Request(method, path, "", "", authorization)


def test_a_switchover_answer_is_json_or_one_line(tmp_path: Path) -> None:
    done, switchover = routes(tmp_path, FakeAnswer(200, document={"switchover": "released"}))
    response = done.respond(post("/switchover?to=a1&hold_off=3s"))
    assert response.status == 200 and b'"switchover": "released"' in response.body
    assert switchover.asked == [("a1", "3s")]
    refused, _ = routes(tmp_path, FakeAnswer(409, "not the leader"))
    assert refused.respond(post("/switchover")).body == b"not the leader\n"


def test_the_gate_answers_before_the_switchover_is_asked(tmp_path: Path) -> None:
    done, switchover = routes(tmp_path, FakeAnswer(200, document={}))
    response = done.respond(post("/switchover", authorization=""))
    assert response.status == 401 and ("WWW-Authenticate", 'Bearer realm="consul-leader"') \
        in response.headers
    assert done.respond(post("/switchover", authorization="Bearer x")).status == 403
    assert switchover.asked == []


def test_only_post_writes_and_reads_stay_open(tmp_path: Path) -> None:
    done, switchover = routes(tmp_path, FakeAnswer(200, document={}))
    get = done.respond(post("/switchover", method="GET"))
    assert get.status == 405 and ("Allow", "POST") in get.headers
    assert done.respond(post("/status", authorization="", method="GET")).status == 200
    assert done.respond(post("/status", method="POST")).status == 405
    no_writes = Routes(CollectorRegistry(), snapshot)
    assert no_writes.respond(post("/switchover")).status == 403
    assert switchover.asked == []
