"""Benchmarks of consul-leader against the Consul stand-in, with the original shell sidecar's
polling loop measured in the same run as the baseline (`python -m bench`, `make bench`).

Everything is real and on loopback: sidecars and baseline clients are separate processes that
get real signals; the stand-in runs in this process so its event journal shares our monotonic
clock. Each scenario gets a fresh stand-in, so counts and events never mix.

Guarantees: every wait has a deadline, every process started is stopped (SIGTERM, then
SIGKILL after a grace period) when its scenario ends however it ends, and the whole run is
bounded by the plan's run counts and windows.
"""
