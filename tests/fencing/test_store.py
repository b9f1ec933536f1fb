"""The fenced store's rule, its HTTP interface and its command."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.fencing.store import FencedStore, StoreServer, WriteRejected, parse_write
from tests.harness import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_a_token_lower_than_the_highest_seen_is_rejected() -> None:
    store = FencedStore()
    assert store.attempt("a", 10).accepted
    assert store.attempt("b", 12).accepted
    stale = store.attempt("a", 10)
    assert not stale.accepted
    assert stale.highest_before == 12
    assert store.highest == 12


def test_an_equal_token_is_accepted_the_same_leader_writing_again() -> None:
    store = FencedStore()
    store.attempt("a", 7)
    assert store.attempt("a", 7).accepted
    assert store.highest == 7


def test_the_first_write_is_accepted_whatever_its_token() -> None:
    assert FencedStore().attempt("a", 0).accepted


def test_a_rejected_write_does_not_lower_the_highest() -> None:
    store = FencedStore()
    store.attempt("a", 5)
    store.attempt("b", 3)
    assert not store.attempt("c", 4).accepted
    assert store.attempt("c", 5).accepted


def test_every_attempt_is_recorded_in_the_order_decided() -> None:
    store = FencedStore()
    for writer, token in (("a", 1), ("b", 2), ("a", 1), ("b", 2)):
        store.attempt(writer, token, session=f"s-{writer}")
    record = store.record()
    assert [(a.seq, a.writer, a.token, a.session, a.accepted) for a in record] == [
        (1, "a", 1, "s-a", True), (2, "b", 2, "s-b", True),
        (3, "a", 1, "s-a", False), (4, "b", 2, "s-b", True)]
    assert [a.at for a in record] == sorted(a.at for a in record)
    assert store.state() == {"highest": 2, "accepted": 3, "rejected": 1}


def test_concurrent_writers_never_get_a_lower_token_accepted_after_a_higher() -> None:
    store = FencedStore()

    def write(token: int) -> None:
        for _ in range(200):
            store.attempt(f"w{token}", token)

    threads = [threading.Thread(target=write, args=(token,)) for token in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [a.token for a in store.record() if a.accepted]
    assert accepted == sorted(accepted)
    assert store.highest == 8


@pytest.mark.parametrize("body, complaint", [
    (b"nope", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"token": 1}', "writer"),
    (b'{"writer": "a", "token": "1"}', "integer"),
    (b'{"writer": "a", "token": true}', "integer"),
    (b'{"writer": "a", "token": 1, "session": 5}', "session"),
])
def test_a_malformed_write_is_refused_with_the_reason(body: bytes, complaint: str) -> None:
    with pytest.raises(WriteRejected, match=complaint):
        parse_write(body)


def test_over_http_a_stale_write_is_409_and_the_record_is_served() -> None:
    with StoreServer() as server:
        first = requests.post(f"{server.url}/write", json={"writer": "a", "token": 3,
                                                           "session": "s1"}, timeout=5)
        newer = requests.post(f"{server.url}/write", json={"writer": "b", "token": 9},
                              timeout=5)
        stale = requests.post(f"{server.url}/write", json={"writer": "a", "token": 3},
                              timeout=5)
        bad = requests.post(f"{server.url}/write", data=b"{", timeout=5)
        record = requests.get(f"{server.url}/record", timeout=5).json()
        state = requests.get(f"{server.url}/state", timeout=5).json()
    assert (first.status_code, newer.status_code, stale.status_code, bad.status_code) == (
        200, 200, 409, 400)
    assert stale.json()["accepted"] is False and stale.json()["highest"] == 9
    assert [(r["writer"], r["token"], r["accepted"]) for r in record] == [
        ("a", 3, True), ("b", 9, True), ("a", 3, False)]
    assert state == {"highest": 9, "accepted": 2, "rejected": 1}


def test_the_command_prints_its_address_serves_and_writes_the_record_on_sigterm(
        tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    process = subprocess.Popen([sys.executable, "-m", "tests.fencing", "--record", str(record)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["store"]
        reply = requests.post(f"{url}/write", json={"writer": "a", "token": 1}, timeout=5)
        assert reply.status_code == 200
    finally:
        process.terminate()
        code = process.wait(10)
    assert code == 0
    assert [(r["writer"], r["token"]) for r in json.loads(record.read_text())] == [("a", 1)]


def test_a_writer_hanging_up_before_the_answer_is_recorded_and_not_reported(
        capsys: pytest.CaptureFixture[str]) -> None:
    with StoreServer() as server:
        host, port = server.url.removeprefix("http://").split(":")
        body = b'{"writer": "a", "token": 4}'
        with socket.create_connection((host, int(port))) as sock:
            # SO_LINGER 0: closing resets the connection, as a killed process's socket does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_for(lambda: server.store.record(), 5.0, "the write recorded")
        requests.get(f"{server.url}/state", timeout=5)  # the server carries on
    assert [(a.writer, a.token) for a in server.store.record()] == [("a", 4)]
    assert "Traceback" not in capsys.readouterr().err
