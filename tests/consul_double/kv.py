"""The KV table: entries, tombstones and lock-delays (consul-semantics.md §2, §1.5).

Every method is called with the cluster lock held; writes take the caller's Txn.
Guarantees, as in Consul's state store (kvs.go):
* A write equal to the stored entry (`DirEntry.Equal`) is skipped: no index, no wake-up.
* LockIndex grows by one on each acquire of an unlocked key; a new key starts at 1.
* Lock-delays are per key, on the monotonic clock, capped at 60s when applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import events
from .core import Core, StateError, Txn
from .durations import SECOND, go_quote
from .model import KvEntry
from .watch import kv_topic

MAX_LOCK_DELAY_NS = 60 * SECOND  # structs.MaxLockDelay (§1.5)
KVS_TABLE = "kvs"


class KvTable:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._entries: dict[str, KvEntry] = {}
        self._tombstones: dict[str, int] = {}
        self._lock_delay_until: dict[str, float] = {}

    # -- reads ---------------------------------------------------------------

    def table_index(self) -> int:
        return self._core.table_index(KVS_TABLE)

    def get(self, key: str) -> tuple[int, KvEntry | None]:
        """§2.2: the entry's ModifyIndex, or the table index when the key is missing."""
        entry = self._entries.get(key)
        if entry is None:
            return self.table_index(), None
        return entry.modify_index, entry

    def list_prefix(self, prefix: str) -> tuple[int, list[KvEntry]]:
        """§2.2 `?recurse`: entries under prefix, indexed by them and their tombstones."""
        entries = self._under(prefix)
        return self._list_index(prefix, (entry.modify_index for entry in entries)), entries

    def keys(self, prefix: str, separator: str) -> tuple[int, list[str]]:
        """§2.2 `?keys`: key names under prefix, cut after the first separator past it."""
        entries = self._under(prefix)
        keys: list[str] = []
        for entry in entries:
            key = entry.key
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if not keys or keys[-1] != key:
                keys.append(key)
        return self._list_index(prefix, (entry.modify_index for entry in entries)), keys

    def held_by(self, session_id: str) -> list[KvEntry]:
        return [entry for entry in self._entries.values() if entry.session == session_id]

    def lock_delay_remaining(self, key: str) -> float:
        """Seconds of lock-delay left on `key` (0 when none)."""
        until = self._lock_delay_until.get(key)
        if until is None:
            return 0.0
        return max(0.0, until - self._core.clock())

    def lock_delays(self) -> dict[str, float]:
        remaining = {key: self.lock_delay_remaining(key) for key in sorted(self._lock_delay_until)}
        return {key: left for key, left in remaining.items() if left > 0}

    def _under(self, prefix: str) -> list[KvEntry]:
        return [self._entries[key] for key in sorted(self._entries) if key.startswith(prefix)]

    def _list_index(self, prefix: str, modify_indexes: Iterable[int]) -> int:
        # kvsListTxn: the root prefix uses the table index; otherwise the highest
        # index among the entries and the tombstones under the prefix, if any.
        if not prefix:
            return self.table_index()
        highest = max(modify_indexes, default=0)
        for key, index in self._tombstones.items():
            if index > highest and key.startswith(prefix):
                highest = index
        return highest or self.table_index()

    # -- writes --------------------------------------------------------------

    def set(self, txn: Txn, key: str, value: bytes | None, flags: int) -> bool:
        """§2.3 plain PUT: overwrite Value/Flags, keep the holder's Session."""
        existing = self._entries.get(key)
        session = existing.session if existing else ""
        self._store(txn, KvEntry(key, value, flags, lock_index=0, session=session))
        return True

    def cas(self, txn: Txn, key: str, value: bytes | None, flags: int, index: int) -> bool:
        """§2.3 `?cas`: 0 creates only; N writes only when ModifyIndex == N; keeps Session."""
        existing = self._entries.get(key)
        if existing is None and index != 0:
            return False
        if existing is not None and existing.modify_index != index:
            return False
        return self.set(txn, key, value, flags)

    def acquire(
        self,
        txn: Txn,
        key: str,
        value: bytes | None,
        flags: int,
        session_id: str,
        session_exists: Callable[[str], bool],
    ) -> bool:
        """§2.3 `?acquire`, steps 1-6 in Consul's order."""
        if self.lock_delay_remaining(key) > 0:
            return False  # step 1: lock-delay is checked before the session
        if not session_id:
            raise StateError("missing session")
        if not session_exists(session_id):
            raise StateError(f"invalid session {go_quote(session_id)}")
        existing = self._entries.get(key)
        if existing is None:
            lock_index = 1  # step 3
        elif existing.session == session_id:
            lock_index = existing.lock_index  # step 5: re-acquire keeps LockIndex
        elif existing.session:
            return False  # step 6: held by another session
        else:
            lock_index = existing.lock_index + 1  # step 4
        self._store(txn, KvEntry(key, value, flags, lock_index=lock_index, session=session_id))
        if existing is None or existing.session != session_id:
            self._core.journal.record(
                events.KV_LOCK_ACQUIRED, key=key, session=session_id, lock_index=lock_index,
                modify_index=self._entries[key].modify_index,  # the fencing token of the term
            )
        return True

    def release(
        self, txn: Txn, key: str, value: bytes | None, flags: int, session_id: str
    ) -> bool:
        """§2.3 `?release`: only the holder's ID releases; Value/Flags replaced, no lock-delay."""
        if not session_id:
            raise StateError("missing session")
        existing = self._entries.get(key)
        if existing is None or existing.session != session_id:
            return False
        self._store(txn, KvEntry(key, value, flags, lock_index=existing.lock_index))
        self._record_release(existing, events.CAUSE_RELEASE)
        return True

    def delete(self, txn: Txn, key: str) -> None:
        """§2.4 plain DELETE: whoever holds it; a missing key changes nothing."""
        if key in self._entries:
            self._delete_by_client(txn, key)

    def delete_cas(self, txn: Txn, key: str, index: int) -> bool:
        """§2.4 `?cas`: deletes only at ModifyIndex == index; a missing key answers true."""
        existing = self._entries.get(key)
        if existing is None:
            return True
        if existing.modify_index != index:
            return False
        self._delete_by_client(txn, key)
        return True

    def delete_tree(self, txn: Txn, prefix: str) -> None:
        """§2.4 `?recurse`: every key under prefix (the whole KV for an empty prefix)."""
        for key in [key for key in self._entries if key.startswith(prefix)]:
            self._delete_by_client(txn, key)

    def invalidate_session(
        self, txn: Txn, session_id: str, delete_keys: bool, lock_delay_ns: int
    ) -> None:
        """§1.5: release (or delete) every key the session holds, then apply lock-delay."""
        delay_ns = min(lock_delay_ns, MAX_LOCK_DELAY_NS)
        for entry in self.held_by(session_id):
            if delete_keys:
                self._remove(txn, entry.key)
            else:
                self._store(txn, KvEntry(
                    entry.key, entry.value, entry.flags, lock_index=entry.lock_index))
            self._record_release(entry, events.CAUSE_INVALIDATION)
            if delay_ns > 0:
                self._lock_delay_until[entry.key] = self._core.clock() + delay_ns / SECOND

    def _store(self, txn: Txn, entry: KvEntry) -> None:
        existing = self._entries.get(entry.key)
        if existing is not None and existing.same_content(entry):
            return  # kvsSetTxn skips equal entries: ModifyIndex stays, nobody wakes
        index = txn.changed(KVS_TABLE, kv_topic(entry.key))
        entry.create_index = existing.create_index if existing else index
        entry.modify_index = index
        self._entries[entry.key] = entry

    def _remove(self, txn: Txn, key: str) -> KvEntry:
        index = txn.changed(KVS_TABLE, kv_topic(key))
        self._tombstones[key] = index
        return self._entries.pop(key)

    def _delete_by_client(self, txn: Txn, key: str) -> None:
        """A client's DELETE: a held key's lock ends with the key."""
        removed = self._remove(txn, key)
        if removed.session:
            self._record_release(removed, events.CAUSE_DELETE)

    def _record_release(self, entry: KvEntry, cause: str) -> None:
        self._core.journal.record(
            events.KV_LOCK_RELEASED, key=entry.key, session=entry.session,
            lock_index=entry.lock_index, cause=cause,
        )
