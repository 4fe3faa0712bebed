"""The known-evidence control: its summary of a scored run, and FGVis on a model whose evidence is known."""
from __future__ import annotations

import json

import pytest

from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.datasets.synthetic import read_label_rule
from retina_fgvis.evaluation.control import control_table, known_evidence


def _summary(sensitivity: dict, chance: dict, success: bool = True) -> dict:
    n_lesions = {t: 0 if sensitivity[t] is None else 10 for t in LESION_TYPES}
    return {
        "method": "fgvis", "n_images": 8, "area_fraction": 0.02, "lesion_sensitivity": sensitivity,
        "n_lesions": n_lesions, "chance": {"lesion_sensitivity": chance},
        "success": {"n_success": 7, "n_failed": 1, "successful": {
            "lesion_sensitivity": sensitivity, "n_lesions": n_lesions, "chance_lesion_sensitivity": chance}}
        if success else None,
    }


def test_known_evidence_splits_the_deciding_type_from_the_others(tmp_path):
    sensitivity = {"hard_exudates": 0.2, "soft_exudates": None, "hemorrhages": 0.5, "red_small_dots": 0.9}
    chance = {"hard_exudates": 0.1, "soft_exudates": None, "hemorrhages": 0.2, "red_small_dots": 0.3}
    result = known_evidence(_summary(sensitivity, chance), "red_small_dots:2")
    assert result["rule"] == "red_small_dots:2" and result["deciding"] == "red_small_dots"
    rows = result["lesion_types"]
    assert [t for t, row in rows.items() if row["role"] == "deciding"] == ["red_small_dots"]
    assert result["deciding_above_chance"] == pytest.approx(0.6)
    assert result["independent_above_chance"] == pytest.approx(0.3)          # hemorrhages; soft exudates have none
    assert rows["soft_exudates"]["above_chance"] is None and rows["hemorrhages"]["above_chance_met"] == pytest.approx(0.3)
    assert result["n_success"] == 7
    (tmp_path / "summary.json").write_text(json.dumps(_summary(sensitivity, chance, success=False)))
    from_file = known_evidence(tmp_path, "red_small_dots:2")                    # a run folder works too
    assert from_file["n_success"] is None and "sensitivity_met" not in from_file["lesion_types"]["hemorrhages"]
    table = control_table(result)
    assert table.row_count == 4 and [c.header for c in table.columns][:3] == ["lesion type", "role", "lesions"]
    with pytest.raises(ValueError, match="label_rule"):
        known_evidence(result, "optic_disc:1")


def test_fgvis_finds_the_deciding_lesion_type_well_above_chance(control_data, control_checkpoint, tmp_path):
    """The paper's medical protocol (LocalizeConfig's defaults) on a model that can only use hard exudates."""
    from retina_fgvis.evaluation.localization import score_run
    from retina_fgvis.localize import LocalizeConfig, localize

    rule = read_label_rule(control_data.root)
    assert str(rule) == "hard_exudates:1"
    config = LocalizeConfig(data_dir=control_data.root, checkpoint=control_checkpoint, out=tmp_path / "fgvis",
                            dataset="synthetic", device="cpu", progress=False)
    assert (config.lam, config.lr, config.stop_score, config.max_iter, config.threshold) == (1e-10, 0.25, 0.10, 500, 0.04)
    result = known_evidence(score_run(localize(config)), rule)
    deciding = result["lesion_types"]["hard_exudates"]
    assert result["n_success"] >= 0.8 * result["n_images"], result
    assert deciding["n_lesions"] >= 20 and deciding["sensitivity"] >= deciding["chance"] + 0.3, result
    # Found far more often than the independent types are, each measured against its own chance.
    assert result["deciding_above_chance"] > result["independent_above_chance"], result
