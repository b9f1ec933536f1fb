"""Fencing, proven end to end (issue 12, item 4).

* `store.py`: a fenced store served over HTTP on loopback (`python -m tests.fencing`): it
  accepts a write only with a token not lower than the highest it has seen, and records
  every attempt.
* `writer.py`: the application, driven by the sidecar's leader file: it writes every few
  tens of milliseconds with the token the file gives, until the file goes.
* `judge.py`: the figures of a run (writes accepted, rejected by fencing, late, stale
  accepted) from the store's record and Consul's journal of the lock key.
* `writers.py`: running writers beside sidecars (as the main task of a Nomad allocation, or
  as plain processes in the Consul-only setting).
"""
