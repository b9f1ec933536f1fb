"""The writer against a real store, driven by a leader file written by hand."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.fencing import writer as writer_module
from tests.fencing.store import StoreServer
from tests.harness import wait_for

WRITER = Path(__file__).with_name("writer.py")
TIMEOUT = 10.0


def lead(path: Path, token: int, session: str) -> None:
    """Write the leader file as the sidecar does (atomically, by rename)."""
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps({"fencing_token": token, "session": session, "since": 0,
                                  "key": "consul-leader/db/lock"}))
    staged.replace(path)


def said(out: Path, what: str) -> float | None:
    """The monotonic instant of the writer's first line starting with `what`."""
    match = re.search(rf"^{re.escape(what)}.* (\d+\.\d+)$", out.read_text(), re.MULTILINE)
    return float(match.group(1)) if match else None


def test_the_writer_follows_the_leader_file_and_keeps_its_token_until_demoted(
        tmp_path: Path) -> None:
    leader_file, out = tmp_path / "alloc-1", tmp_path / "writer.out"
    with StoreServer() as server, open(out, "w") as log:
        # As Nomad starts the main task: by path, the leader file and ID from NOMAD_*.
        env = {**os.environ, "NOMAD_ALLOC_DIR": str(tmp_path), "NOMAD_ALLOC_ID": "alloc-1"}
        writer = subprocess.Popen([sys.executable, str(WRITER), "--store", server.url,
                                   "--period", "0.02"], env=env, stdout=log, cwd=tmp_path)
        try:
            store = server.store
            wait_for(lambda: said(out, "started"), TIMEOUT, "the writer to start")
            assert store.record() == [], "it wrote without leading"
            lead(leader_file, 5, "s1")
            wait_for(lambda: any(a.accepted and a.token == 5 for a in store.record()),
                     TIMEOUT, "a write with token 5")
            store.attempt("the next leader", 9, "s2")  # leadership moved; it has not noticed
            wait_for(lambda: any(not a.accepted and a.writer == "alloc-1"
                                 for a in store.record()), TIMEOUT, "its stale write rejected")
            leader_file.unlink()
            demoted = wait_for(lambda: said(out, "demoted"), TIMEOUT, "it to notice")
            assert demoted is not None
            lead(leader_file, 11, "s3")
            wait_for(lambda: any(a.token == 11 for a in store.record()), TIMEOUT,
                     "a write with token 11")
        finally:
            writer.send_signal(signal.SIGTERM)
            code = writer.wait(TIMEOUT)
    mine = [a for a in store.record() if a.writer == "alloc-1"]
    assert {a.session for a in mine} == {"s1", "s3"}
    assert not [a for a in mine if a.token == 5 and a.at > demoted], "wrote after the demotion"
    assert code == 0
    assert "exiting: accepted=" in out.read_text()


def test_without_a_leader_file_or_an_id_it_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    done = subprocess.run([sys.executable, str(WRITER), "--store", "http://127.0.0.1:9"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert "--leader-file" in done.stderr


def test_an_answer_that_is_not_the_stores_json_is_kept_as_text_not_a_crash() -> None:
    assert writer_module._answer(b'{"accepted": true}') == {"accepted": True}
    assert writer_module._answer(b"<html>500</html>") == {"body": "<html>500</html>"}
    assert writer_module._answer(b"[1]") == {"body": "[1]"}


def test_a_store_that_does_not_answer_is_status_0() -> None:
    status, answer = writer_module.write("http://127.0.0.1:9", "w", writer_module.Belief(1, "s"))
    assert status == 0 and "error" in answer
