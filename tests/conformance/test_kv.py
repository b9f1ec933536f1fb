"""Conformance of the KV store (consul-semantics.md §2) as a lock client uses it.

Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

import base64

import pytest

from tests.conformance.conftest import ConsulTarget
from tests.consul_double import ConsulDouble

real_consul = pytest.mark.real_consul

ENTRY_FIELDS = ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]
LOCKED_ENTRY_FIELDS = ["LockIndex", "Key", "Flags", "Value", "Session", "CreateIndex",
                       "ModifyIndex"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- §2.1/§2.2 reading ---------------------------------------------------------


@real_consul
def test_put_then_get_shows_the_entry_fields_in_order(consul: ConsulTarget) -> None:
    """§2.1: LockIndex, Key, Flags, Value (base64), no Session when unlocked, indexes."""
    key = consul.key("plain")
    assert consul.put(f"/v1/kv/{key}", data=b"hello").json() is True
    response = consul.get(f"/v1/kv/{key}")
    assert response.status_code == 200
    [entry] = response.json()
    assert list(entry) == ENTRY_FIELDS
    assert (entry["LockIndex"], entry["Key"], entry["Flags"]) == (0, key, 0)
    assert entry["Value"] == b64(b"hello")
    assert entry["CreateIndex"] == entry["ModifyIndex"]
    assert response.headers["X-Consul-Index"] == str(entry["ModifyIndex"])


@real_consul
def test_empty_body_stores_a_null_value(consul: ConsulTarget) -> None:
    """§2.1: a PUT with an empty body stores nil, shown as `"Value": null`."""
    key = consul.key("empty")
    consul.put(f"/v1/kv/{key}", data=b"")
    assert (consul.kv_entry(key) or {"Value": "missing"})["Value"] is None


@real_consul
def test_missing_key_is_a_404_with_empty_body_and_metadata(consul: ConsulTarget) -> None:
    """§2.2: 404, empty body, X-Consul-Index/KnownLeader still set."""
    response = consul.get(f"/v1/kv/{consul.key('absent')}")
    assert response.status_code == 404
    assert response.content == b""
    assert int(response.headers["X-Consul-Index"]) >= 1
    assert response.headers["X-Consul-KnownLeader"] == "true"


@real_consul
def test_missing_key_index_is_that_of_its_delete(consul: ConsulTarget) -> None:
    """§2.2: a deleted key's 404 carries the tombstone's index, later than the entry's."""
    key = consul.key("tombstoned")
    consul.put(f"/v1/kv/{key}", data=b"x")
    written = (consul.kv_entry(key) or {})["ModifyIndex"]
    consul.delete(f"/v1/kv/{key}")
    assert int(consul.get(f"/v1/kv/{key}").headers["X-Consul-Index"]) > written


@real_consul
def test_raw_returns_the_bare_value(consul: ConsulTarget) -> None:
    """§2.2 `?raw`: the value bytes with text/plain, nosniff and a sandbox CSP."""
    key = consul.key("raw")
    consul.put(f"/v1/kv/{key}", data=b"\x00binary\xff")
    response = consul.get(f"/v1/kv/{key}?raw")
    assert response.status_code == 200
    assert response.content == b"\x00binary\xff"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "sandbox"


@real_consul
def test_recurse_lists_every_entry_under_the_prefix_in_key_order(consul: ConsulTarget) -> None:
    """§2.2 `?recurse`: an array of entries under the prefix, sorted by key."""
    for name in ("b", "a", "a/deep"):
        consul.put(f"/v1/kv/{consul.key('tree/' + name)}", data=name.encode())
    consul.put(f"/v1/kv/{consul.key('treehouse')}", data=b"sibling")
    entries = consul.get(f"/v1/kv/{consul.key('tree/')}?recurse").json()
    assert [entry["Key"] for entry in entries] == [
        consul.key("tree/a"), consul.key("tree/a/deep"), consul.key("tree/b")]


@real_consul
def test_recurse_on_an_empty_prefix_is_a_404(consul: ConsulTarget) -> None:
    """§2.2: `?recurse` with nothing under the prefix → 404."""
    assert consul.get(f"/v1/kv/{consul.key('nothing/')}?recurse").status_code == 404


@real_consul
def test_keys_lists_names_cut_at_the_separator(consul: ConsulTarget) -> None:
    """§2.2 `?keys&separator=/`: names, each cut after the first separator past the prefix."""
    for name in ("dir/a", "dir/b", "dir/sub/c", "file"):
        consul.put(f"/v1/kv/{consul.key('k/' + name)}")
    keys = consul.get(f"/v1/kv/{consul.key('k/')}?keys&separator=/").json()
    assert keys == [consul.key("k/dir/"), consul.key("k/file")]
    every = consul.get(f"/v1/kv/{consul.key('k/')}?keys").json()
    assert len(every) == 4


@real_consul
def test_keys_accepts_the_old_seperator_spelling(consul: ConsulTarget) -> None:
    """§2.2: `seperator` (sic) works like `separator`."""
    consul.put(f"/v1/kv/{consul.key('s/dir/a')}")
    keys = consul.get(f"/v1/kv/{consul.key('s/')}?keys&seperator=/").json()
    assert keys == [consul.key("s/dir/")]


@real_consul
def test_keys_on_an_empty_prefix_is_a_404(consul: ConsulTarget) -> None:
    """§2.2: no keys under a non-empty prefix → 404."""
    assert consul.get(f"/v1/kv/{consul.key('void/')}?keys").status_code == 404


def test_keys_at_the_root_of_an_empty_store_is_an_empty_list(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§2.2: for the root prefix the answer is `[]`, not 404."""
    response = consul.get("/v1/kv/?keys")
    assert (response.status_code, response.json()) == (200, [])


@real_consul
def test_get_without_key_is_a_400(consul: ConsulTarget) -> None:
    """§2.2: an empty key without `?recurse` → 400 `Missing key name`."""
    consul.assert_error(consul.get("/v1/kv/"), 400, "Missing key name")


@real_consul
def test_stale_with_consistent_is_a_400(consul: ConsulTarget) -> None:
    """§2.2: the two consistency modes conflict."""
    response = consul.get(f"/v1/kv/{consul.key('x')}?stale&consistent")
    consul.assert_error(
        response, 400, "Cannot specify ?stale with ?consistent, conflicting semantics."
    )


@real_consul
@pytest.mark.parametrize("mode", ["consistent", "stale"])
def test_consistency_modes_read_the_value(consul: ConsulTarget, mode: str) -> None:
    """§2.2: `?consistent` and `?stale` read the same data when there is a leader."""
    key = consul.key("modes")
    consul.put(f"/v1/kv/{key}", data=b"v")
    response = consul.get(f"/v1/kv/{key}?{mode}")
    assert response.status_code == 200
    assert response.json()[0]["Value"] == b64(b"v")


# -- §2.3 writing --------------------------------------------------------------


@real_consul
def test_put_answers_true_without_an_index_header(consul: ConsulTarget) -> None:
    """§2.3/§0: a plain PUT answers `true`; write endpoints send no X-Consul-Index."""
    response = consul.put(f"/v1/kv/{consul.key('w')}", data=b"1")
    assert (response.status_code, response.json()) == (200, True)
    assert response.headers["Content-Type"] == "application/json"
    assert "X-Consul-Index" not in response.headers


@real_consul
def test_flags_are_stored_and_reset_to_zero_when_missing(consul: ConsulTarget) -> None:
    """§2.3: `?flags=N` sets Flags; a later PUT without `flags` writes 0."""
    key = consul.key("flags")
    consul.put(f"/v1/kv/{key}?flags=42", data=b"x")
    assert (consul.kv_entry(key) or {})["Flags"] == 42
    consul.put(f"/v1/kv/{key}", data=b"x")
    assert (consul.kv_entry(key) or {})["Flags"] == 0


@real_consul
def test_unparsable_flags_answer_500_with_go_error(consul: ConsulTarget) -> None:
    """§2.3: a flags value that does not parse → 500 with strconv's text."""
    response = consul.put(f"/v1/kv/{consul.key('bad-flags')}?flags=abc")
    consul.assert_error(response, 500, 'strconv.ParseUint: parsing "abc": invalid syntax')


@real_consul
def test_put_without_key_is_a_400(consul: ConsulTarget) -> None:
    """§2.3: empty key → 400 `Missing key name`."""
    consul.assert_error(consul.put("/v1/kv/", data=b"x"), 400, "Missing key name")


@real_consul
def test_conflicting_flags_are_a_400_naming_the_query(consul: ConsulTarget) -> None:
    """§2.3: two of cas/acquire/release → 400 `Conflicting flags: <encoded query>`."""
    response = consul.put(f"/v1/kv/{consul.key('c')}?cas=0&acquire=abc")
    consul.assert_error(response, 400, "Conflicting flags: acquire=abc&cas=0")


@real_consul
def test_oversized_value_is_a_413(consul: ConsulTarget) -> None:
    """§2.3: more than kv_max_value_size (512 KiB) → 413."""
    response = consul.put(f"/v1/kv/{consul.key('big')}", data=b"x" * (512 * 1024 + 1))
    assert response.status_code == 413
    assert response.text.startswith("Request body(524289 bytes) too large, max size: 524288")


@real_consul
def test_identical_rewrite_keeps_the_modify_index(consul: ConsulTarget) -> None:
    """§2.3 no-op writes: an equal entry is not written again; the reply is still true."""
    key = consul.key("same")
    consul.put(f"/v1/kv/{key}?flags=3", data=b"same")
    before = (consul.kv_entry(key) or {})["ModifyIndex"]
    assert consul.put(f"/v1/kv/{key}?flags=3", data=b"same").json() is True
    assert (consul.kv_entry(key) or {})["ModifyIndex"] == before


@real_consul
def test_cas_zero_creates_only(consul: ConsulTarget) -> None:
    """§2.3 `?cas=0`: writes only if the key does not exist."""
    key = consul.key("create-only")
    assert consul.put(f"/v1/kv/{key}?cas=0", data=b"first").json() is True
    assert consul.put(f"/v1/kv/{key}?cas=0", data=b"second").json() is False
    assert (consul.kv_entry(key) or {})["Value"] == b64(b"first")


@real_consul
def test_cas_writes_only_at_the_current_modify_index(consul: ConsulTarget) -> None:
    """§2.3 `?cas=N`: true at the current ModifyIndex, false at a stale one."""
    key = consul.key("cas")
    consul.put(f"/v1/kv/{key}", data=b"v1")
    index = (consul.kv_entry(key) or {})["ModifyIndex"]
    assert consul.put(f"/v1/kv/{key}?cas={index}", data=b"v2").json() is True
    assert consul.put(f"/v1/kv/{key}?cas={index}", data=b"v3").json() is False
    assert (consul.kv_entry(key) or {})["Value"] == b64(b"v2")


@real_consul
def test_cas_on_a_missing_key_with_nonzero_index_is_false(consul: ConsulTarget) -> None:
    """§2.3: N>0 on a missing key answers false and creates nothing."""
    key = consul.key("cas-missing")
    assert consul.put(f"/v1/kv/{key}?cas=5", data=b"x").json() is False
    assert consul.kv_entry(key) is None


@real_consul
def test_acquire_creates_the_key_with_lock_index_one(consul: ConsulTarget) -> None:
    """§2.3 step 3: a new key starts with LockIndex 1 and the session set."""
    key = consul.key("lock")
    session_id = consul.create_session()
    response = consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"me")
    assert (response.status_code, response.json()) == (200, True)
    entry = consul.kv_entry(key) or {}
    assert list(entry) == LOCKED_ENTRY_FIELDS
    assert (entry["LockIndex"], entry["Session"], entry["Value"]) == (1, session_id, b64(b"me"))


@real_consul
def test_acquire_of_an_unlocked_key_increments_lock_index(consul: ConsulTarget) -> None:
    """§2.3 step 4: LockIndex+1, CreateIndex kept, Value replaced."""
    key = consul.key("relock")
    consul.put(f"/v1/kv/{key}", data=b"plain")
    created = (consul.kv_entry(key) or {})["CreateIndex"]
    first = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={first}")
    consul.put(f"/v1/kv/{key}?release={first}")
    second = consul.create_session()
    assert consul.put(f"/v1/kv/{key}?acquire={second}", data=b"two").json() is True
    entry = consul.kv_entry(key) or {}
    assert (entry["LockIndex"], entry["CreateIndex"], entry["Value"]) == (2, created, b64(b"two"))


@real_consul
def test_reacquire_by_the_holder_keeps_lock_index_and_replaces_value(
    consul: ConsulTarget,
) -> None:
    """§2.3 step 5: true, LockIndex unchanged, Value replaced."""
    key = consul.key("holder")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"one")
    assert consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"two").json() is True
    entry = consul.kv_entry(key) or {}
    assert (entry["LockIndex"], entry["Value"]) == (1, b64(b"two"))


@real_consul
def test_identical_reacquire_is_a_no_op(consul: ConsulTarget) -> None:
    """§2.3 step 5: nothing differs → ModifyIndex stays (since 0.6.0)."""
    key = consul.key("noop-acquire")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"same")
    before = (consul.kv_entry(key) or {})["ModifyIndex"]
    assert consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"same").json() is True
    assert (consul.kv_entry(key) or {})["ModifyIndex"] == before


@real_consul
def test_acquire_of_a_key_held_by_another_is_false_and_writes_nothing(
    consul: ConsulTarget,
) -> None:
    """§2.3 step 6: false; the holder, value and indexes are untouched."""
    key = consul.key("contended")
    holder = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={holder}", data=b"mine")
    before = consul.kv_entry(key)
    contender = consul.create_session()
    response = consul.put(f"/v1/kv/{key}?acquire={contender}", data=b"theirs")
    assert (response.status_code, response.json()) == (200, False)
    assert consul.kv_entry(key) == before


@real_consul
def test_acquire_with_unknown_session_is_a_500(consul: ConsulTarget) -> None:
    """§2.3 step 2: 500 `invalid session "<id>"` (Go-quoted)."""
    unknown = "12345678-1234-1234-1234-123456789012"
    response = consul.put(f"/v1/kv/{consul.key('invalid')}?acquire={unknown}")
    consul.assert_error(response, 500, f'invalid session "{unknown}"')


@real_consul
def test_acquire_with_empty_session_is_a_500(consul: ConsulTarget) -> None:
    """§2.3 step 2: `?acquire=` → 500 `missing session`."""
    consul.assert_error(consul.put(f"/v1/kv/{consul.key('m')}?acquire="), 500, "missing session")


@real_consul
def test_lock_delay_is_checked_before_the_session(consul: ConsulTarget) -> None:
    """§2.3 step 1: under lock-delay even an unknown session gets 200 `false`, not 500."""
    key = consul.key("delay-first")
    holder = consul.create_session(LockDelay="15s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    consul.put(f"/v1/session/destroy/{holder}")
    unknown = "12345678-1234-1234-1234-123456789012"
    response = consul.put(f"/v1/kv/{key}?acquire={unknown}")
    assert (response.status_code, response.json()) == (200, False)


@real_consul
def test_release_by_the_holder_clears_session_and_replaces_value(consul: ConsulTarget) -> None:
    """§2.3 `?release`: true; Session cleared, LockIndex kept, Value/Flags from the request."""
    key = consul.key("release")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}&flags=9", data=b"held")
    before = consul.kv_entry(key) or {}
    assert consul.put(f"/v1/kv/{key}?release={session_id}").json() is True
    entry = consul.kv_entry(key) or {}
    assert "Session" not in entry
    assert entry["LockIndex"] == before["LockIndex"]
    assert (entry["Value"], entry["Flags"]) == (None, 0)  # an empty release blanks the value
    assert entry["ModifyIndex"] > before["ModifyIndex"]


@real_consul
def test_release_by_another_session_is_false(consul: ConsulTarget) -> None:
    """§2.3: releasing a key someone else holds answers false and writes nothing."""
    key = consul.key("not-yours")
    holder = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    before = consul.kv_entry(key)
    other = consul.create_session()
    assert consul.put(f"/v1/kv/{key}?release={other}").json() is False
    assert consul.kv_entry(key) == before


@real_consul
def test_release_of_a_missing_or_unlocked_key_is_false(consul: ConsulTarget) -> None:
    """§2.3: missing key, or a key nobody holds → false."""
    session_id = consul.create_session()
    assert consul.put(f"/v1/kv/{consul.key('gone')}?release={session_id}").json() is False
    unlocked = consul.key("unlocked")
    consul.put(f"/v1/kv/{unlocked}", data=b"x")
    assert consul.put(f"/v1/kv/{unlocked}?release={session_id}").json() is False


@real_consul
def test_release_with_empty_session_is_a_500(consul: ConsulTarget) -> None:
    """§2.3: `?release=` → 500 `missing session`."""
    consul.assert_error(consul.put(f"/v1/kv/{consul.key('r')}?release="), 500, "missing session")


@real_consul
def test_plain_put_on_a_locked_key_keeps_the_holder(consul: ConsulTarget) -> None:
    """§2.3: locks are advisory: a plain PUT overwrites the value and keeps Session."""
    key = consul.key("advisory")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"mine")
    assert consul.put(f"/v1/kv/{key}", data=b"overwritten").json() is True
    entry = consul.kv_entry(key) or {}
    assert (entry["Session"], entry["Value"]) == (session_id, b64(b"overwritten"))


@real_consul
def test_cas_on_a_locked_key_keeps_the_holder(consul: ConsulTarget) -> None:
    """§2.3: a CAS write keeps the existing session."""
    key = consul.key("cas-locked")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"mine")
    index = (consul.kv_entry(key) or {})["ModifyIndex"]
    assert consul.put(f"/v1/kv/{key}?cas={index}", data=b"cas").json() is True
    assert (consul.kv_entry(key) or {})["Session"] == session_id


# -- §2.4 deleting -------------------------------------------------------------


@real_consul
def test_delete_answers_true_even_for_a_missing_key(consul: ConsulTarget) -> None:
    """§2.4: plain DELETE is always `true`."""
    key = consul.key("doomed")
    consul.put(f"/v1/kv/{key}", data=b"x")
    assert consul.delete(f"/v1/kv/{key}").json() is True
    assert consul.kv_entry(key) is None
    assert consul.delete(f"/v1/kv/{key}").json() is True


@real_consul
def test_delete_removes_a_locked_key_and_leaves_the_session(consul: ConsulTarget) -> None:
    """§2.4: DELETE works whoever holds the key and does not touch sessions."""
    key = consul.key("locked-doomed")
    session_id = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={session_id}")
    assert consul.delete(f"/v1/kv/{key}").json() is True
    assert consul.kv_entry(key) is None
    assert consul.session_info(session_id) != []


@real_consul
def test_delete_sets_no_lock_delay(consul: ConsulTarget) -> None:
    """§2.4: after a DELETE another session can acquire at once."""
    key = consul.key("delete-no-delay")
    holder = consul.create_session(LockDelay="15s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    consul.delete(f"/v1/kv/{key}")
    contender = consul.create_session()
    assert consul.put(f"/v1/kv/{key}?acquire={contender}").json() is True


@real_consul
def test_delete_cas_deletes_only_at_the_current_index(consul: ConsulTarget) -> None:
    """§2.4 `?cas`: false at another index (0 included), true at the current one."""
    key = consul.key("delete-cas")
    consul.put(f"/v1/kv/{key}", data=b"x")
    index = (consul.kv_entry(key) or {})["ModifyIndex"]
    assert consul.delete(f"/v1/kv/{key}?cas=0").json() is False
    assert consul.delete(f"/v1/kv/{key}?cas={index + 1000}").json() is False
    assert consul.delete(f"/v1/kv/{key}?cas={index}").json() is True
    assert consul.kv_entry(key) is None


@real_consul
def test_delete_cas_of_a_missing_key_is_true(consul: ConsulTarget) -> None:
    """§2.4: a missing key answers true for any cas value."""
    assert consul.delete(f"/v1/kv/{consul.key('never')}?cas=12345").json() is True


@real_consul
def test_delete_recurse_removes_the_prefix_only(consul: ConsulTarget) -> None:
    """§2.4 `?recurse`: every key under the prefix, nothing else."""
    for name in ("p/a", "p/b/c", "q"):
        consul.put(f"/v1/kv/{consul.key(name)}", data=b"x")
    assert consul.delete(f"/v1/kv/{consul.key('p/')}?recurse").json() is True
    assert consul.get(f"/v1/kv/{consul.key('p/')}?recurse").status_code == 404
    assert consul.kv_entry(consul.key("q")) is not None


@real_consul
def test_delete_recurse_with_cas_is_a_400(consul: ConsulTarget) -> None:
    """§2.4: `recurse` with `cas` → 400 `Conflicting flags`."""
    response = consul.delete(f"/v1/kv/{consul.key('p/')}?recurse&cas=1")
    consul.assert_error(response, 400, "Conflicting flags: cas=1&recurse=")


@real_consul
def test_delete_without_key_is_a_400(consul: ConsulTarget) -> None:
    """§2.4: empty key without `?recurse` → 400 `Missing key name`."""
    consul.assert_error(consul.delete("/v1/kv/"), 400, "Missing key name")


# -- §0 on KV paths ------------------------------------------------------------


@real_consul
def test_double_slash_key_path_redirects_to_the_clean_path(consul: ConsulTarget) -> None:
    """§0: `/v1/kv//x` is not a key `/x`: the mux answers 301 to `/v1/kv/x`, query kept."""
    response = consul.put(f"/v1/kv//{consul.key('slash')}?flags=1", data=b"x",
                          allow_redirects=False)
    assert response.status_code in (301, 307)
    assert response.headers["Location"] == f"/v1/kv/{consul.key('slash')}?flags=1"


@real_consul
def test_key_with_encoded_slash_keeps_the_slash(consul: ConsulTarget) -> None:
    """§0 [inferred]: a percent-encoded leading slash is not redirected; the key keeps it."""
    key = consul.key("encoded")
    assert consul.put(f"/v1/kv/%2F{key}", data=b"x").json() is True
    entry = consul.get(f"/v1/kv/%2F{key}").json()[0]
    assert entry["Key"] == "/" + key
    consul.delete(f"/v1/kv/%2F{key}")
