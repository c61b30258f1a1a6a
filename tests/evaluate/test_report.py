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


def test_defect_table_rows_are_per_type_means_with_empty_counts(tmp_path):
    from data_prep.manifest import Manifest
    from fam_skull.evaluate.report import defect_table

    cases = [{"id": i, "defect": d} for i, d in (("a", "sphere"), ("b", "sphere"), ("c", "facial"), ("d", "facial"))]
    manifest = Manifest(tmp_path / "manifest.json", {"cases": cases})

    def case(cid, s, dsc, bdsc, hd95, empty=None):
        return {"case": cid, "set": s, "implant": {"dsc": dsc, "bdsc": bdsc, "hd95": hd95, "empty": empty}}

    per_case = [case("a", "eval1", 0.8, 0.9, 2.0), case("b", "eval1", 0.6, 0.7, 4.0), case("c", "eval2", 0.0, 0.0, 50.0, "prediction")]
    per_case.append({"case": "d", "set": "eval2", "error": "unreadable"})
    md, text = defect_table({"baseline": {"metric_per_case": per_case}}, manifest, ("eval1", "eval2"))
    rows = [line.split(",") for line in text.strip().splitlines()]
    assert rows[0][:4] == ["method", "set", "defect type", "cases"]
    assert rows[1] == ["baseline", "set 1", "sphere", "2", "0.7000", "0.800", "3.000", "0"]
    assert rows[2] == ["baseline", "set 2", "facial", "1", "0.0000", "0.000", "50.000", "1"]
    assert len(rows) == 3 and "| baseline | set 2 | facial | 1 |" in md
