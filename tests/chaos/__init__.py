"""The chaos suite (issue 5): real sidecars, the Consul stand-in, injected faults, invariants.

    cluster.py    the stand-in, one sidecar per node behind its own fault proxy, the observer
    proxy.py      the fault proxy (refuse connections, rewrite answers)
    mutations.py  what the proxy does to answers (index, status, body, pacing)
    observer.py   samples Consul's health view and every /status every 50 ms
    timeline.py   what was seen, and the faults, on one monotonic clock
    analysis.py   the invariants and the numbers, as pure functions of a timeline
    scenarios.py  the named faults 1-11; fuzz.py (12, hypothesis); soak.py (13)
    runner.py     one run of a scenario, judged; suite.py: every scenario by name
    report.py     the table, the JSON and the SVG timelines

Run: `python -m scripts.chaos` (everything, 3 runs each) or `--ci` (the CI subset); as tests,
`pytest tests/chaos` (the CI subset) or `pytest tests/chaos -m chaos_full` (everything).
"""
