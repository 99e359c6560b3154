"""bench/stages.py's table from a hand-made result (no bench runs, no timings asserted): one row per
stage and transport in the order the plugin runs them, a total, and each function's share of it."""
from bench.stages import FUNCTIONS, STAGES, TRANSPORTS, stages_table

RESULT = {
    "labelImage": {"stages": {stage: {"median_ms": 1.0} for stage in STAGES if stage != "picture encoding"},
                   "transports": {"nng": 3.0}},
    "inference": {"stages": {stage: {"median_ms": 2.0} for stage in STAGES},
                  "transports": {"nng": 2.0, "kuiperd": 4.0}},
}


def rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()]


def test_one_row_per_stage_and_transport_then_the_total():
    table = rows(stages_table(RESULT))
    assert table[0][:3] == ["stage", *(f"{fn} ms CPU" for fn in FUNCTIONS)]
    assert [row[0] for row in table[2:]] == [*STAGES, *TRANSPORTS, "total"]
    assert all(len(row) == 4 for row in table)


def test_a_stage_a_function_lacks_is_a_dash_and_shares_are_of_each_functions_total():
    table = {row[0]: row[1:] for row in rows(stages_table(RESULT))[2:]}
    # labelImage: 7 stages x 1 + nng 3 = 10; inference: 8 stages x 2 + nng 2 + kuiperd 4 = 22.
    assert table["picture encoding"] == ["-", "2.00", "- / 9 %"]
    assert table["kuiperd"][0] == "-"
    assert table["total"][:2] == ["10.00", "22.00"]
    assert table["nng"] == ["3.00", "2.00", "30 % / 9 %"]
