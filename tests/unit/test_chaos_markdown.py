"""The README's chaos table is printed from results.json, column for column."""

from scripts.chaos_markdown import markdown

ROW = {
    "name": "sigkill-leader", "item": 1, "mode": "nomad", "overlap_s": 0.0,
    "no_primary_s": 0.201, "one_primary_share": 0.9778, "max_no_leader_s": 2.865,
    "double_leader_s": 0.0, "detection_p50_s": 2.458, "detection_p95_s": None,
    "recovery_max_s": 2.904, "bound_s": 7.0, "crashes": 0, "outcome": "ok",
    "per_run": [{}, {}],
}


def cells(text: str, line: int) -> list[str]:
    return [cell.strip() for cell in text.splitlines()[line].strip("|").split("|")]


def test_a_row_shows_each_figure_with_its_unit_and_a_dash_for_none() -> None:
    text = markdown({"scenarios": [ROW, {**ROW, "name": "fuzz", "item": 12, "mode": "consul"}]})
    assert cells(text, 2) == ["1. sigkill-leader", "2", "0.00", "0.20", "97.8 %", "2.87", "0.00",
                              "2.46 / —", "2.90 / 7.00", "0", "ok"]
    assert cells(text, 3)[0] == "12. fuzz (Consul only)"
    assert "fenced" not in text


def test_the_fencing_column_appears_when_a_run_has_it() -> None:
    fenced = {**ROW, "fencing": {"accepted": 120, "rejected": 3, "stale_accepted": 0}}
    text = markdown({"scenarios": [fenced, ROW]})
    assert "fenced writes accepted / rejected / stale accepted" in cells(text, 0)
    assert cells(text, 2)[-3] == "120 / 3 / 0"
    assert cells(text, 3)[-3] == "—"
