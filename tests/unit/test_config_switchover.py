"""The switchover, write-path and priority variables (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consul_leader.adapters import cli
from tests.unit.test_config import errors, load


def test_defaults_writes_off_priority_one_hold_off_five_seconds() -> None:
    config = load()
    assert (config.http_writes, config.http_token_file) == (False, None)
    assert (config.priority, config.hold_off) == (1, 5.0)


def test_writes_take_on_off_and_booleans() -> None:
    for text, expected in (("on", True), ("OFF", False), ("true", True), ("0", False)):
        assert load(CONSUL_LEADER_HTTP_WRITES=text).http_writes is expected, text
    assert errors(CONSUL_LEADER_HTTP_WRITES="maybe") == [
        'CONSUL_LEADER_HTTP_WRITES="maybe": must be on or off']


def test_priority_is_an_integer_from_zero() -> None:
    assert load(CONSUL_LEADER_PRIORITY="0").priority == 0
    assert load(CONSUL_LEADER_PRIORITY="3").priority == 3
    for text in ("-1", "1.5", "high"):
        assert errors(CONSUL_LEADER_PRIORITY=text) == [
            f'CONSUL_LEADER_PRIORITY="{text}": must be an integer >= 0 (0: never lead)']


def test_hold_off_is_a_bounded_duration() -> None:
    assert load(CONSUL_LEADER_SWITCHOVER_HOLD_OFF="0s").hold_off == 0.0
    assert load(CONSUL_LEADER_SWITCHOVER_HOLD_OFF="1m").hold_off == 60.0
    [line] = errors(CONSUL_LEADER_SWITCHOVER_HOLD_OFF="2m")
    assert line.startswith('CONSUL_LEADER_SWITCHOVER_HOLD_OFF="2m": must be at most 1m')


def test_an_unusable_token_file_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    good = tmp_path / "token"
    good.write_text("abc-123\n")
    assert load(CONSUL_LEADER_HTTP_TOKEN_FILE=str(good)).http_token_file == str(good)
    [missing] = errors(CONSUL_LEADER_HTTP_TOKEN_FILE=str(tmp_path / "nope"))
    [blank] = errors(CONSUL_LEADER_HTTP_TOKEN_FILE=str(empty))
    assert missing.startswith("CONSUL_LEADER_HTTP_TOKEN_FILE=") and "cannot read" in missing
    assert blank.endswith("the token file is empty")


def test_the_cli_refuses_an_unusable_token_file_before_any_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI sent a request")

    monkeypatch.setattr("requests.post", no_request)
    environ = {"CONSUL_LEADER_HTTP_TOKEN_FILE": str(tmp_path / "nope")}
    assert cli.main(["switchover", "--to", "a1"], environ) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("consul-leader switchover: configuration error: "
                           "CONSUL_LEADER_HTTP_TOKEN_FILE=")
    assert cli.main(["switchover", "--token-file", str(tmp_path / "nope")], {}) == 2
    assert "--token-file=" in capsys.readouterr().err
