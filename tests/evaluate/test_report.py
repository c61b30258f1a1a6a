"""report.py: the paper-layout table from evaluation summaries (mean +- sample std over seeds, recomputed by hand)."""

from fam_skull.evaluate.evaluation import aggregate
from fam_skull.evaluate.report import paper_table


def _summary(dscs, hd95s):
    cases = [
        {
            "case": f"c{i:03d}",
            "set": "eval1",
            "implant": {"dsc": d, "hd": 2 * h, "hd95": h, "assd": 1.0, "empty": None},
            "complete": {"dsc": 0.9, "hd": 1.0, "hd95": 1.0, "assd": 0.5, "empty": None},
        }
        for i, (d, h) in enumerate(zip(dscs, hd95s))
    ]
    return {"sets": {"eval1": aggregate(cases, subset=2)}}


def test_paper_table_cells_are_seed_means_and_sample_stds():
    seeds = [_summary([0.5, 0.7, 0.9], [3.0, 5.0, 7.0]), _summary([0.6, 0.8, 1.0], [4.0, 6.0, 8.0])]
    md, csv_text = paper_table({"baseline": seeds, "one run": seeds[:1]}, ["eval1"])
    lines = md.splitlines()
    assert lines[0] == "| method | set 1: DSC | set 1: DSC (100) | set 1: HD | set 1: HD (100) | set 1: HD95 | set 1: HD95 (100) |"
    # seed means: DSC 0.7 and 0.8 -> 0.75 +- std(ddof=1) 0.0707; HD (= 2 x HD95) 10 and 12 -> 11 +- 1.414; the (100)
    # columns use the first 2 cases of each seed: DSC 0.6 and 0.7, HD 8 and 10, HD95 4 and 5
    assert (
        lines[2]
        == "| baseline (2 seeds) | 0.7500 ± 0.0707 | 0.6500 ± 0.0707 | 11.000 ± 1.414 | 9.000 ± 1.414 | 5.500 ± 0.707 | 4.500 ± 0.707 |"
    )
    assert lines[3] == "| one run | 0.7000 | 0.6000 | 10.000 | 8.000 | 5.000 | 4.000 |"
    assert "baseline (2 seeds)" in csv_text
