"""The known-evidence control: how an explainer scores when the model's evidence is known.

On a semi-synthetic set made with a label rule (``retina-fgvis synth --label-rule TYPE:k``: RDR iff at
least k lesions of TYPE, the other lesion types drawn independently of the label), a model that
classifies well can only have used lesions of the deciding type. A faithful explainer then finds that
type well above chance and the independent types near chance. :func:`known_evidence` reads a scored
run (``summary.json`` of :func:`retina_fgvis.evaluation.localization.score_run`) and states exactly that:

per lesion type, its ``role`` (``"deciding"`` or ``"independent"``), lesions, lesion sensitivity, the
chance control (the same masks rotated) and their difference ``above_chance``; the same over the
explanations that met their stop rule (``*_met``); and ``deciding_above_chance`` /
``independent_above_chance`` (the deciding type's margin, the largest margin among the others).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from rich import box
from rich.table import Table

from retina_fgvis.datasets.synthetic import LabelRule
from retina_fgvis.evaluation.localization import percent
from retina_fgvis.viz import LESION_NAMES

__all__ = ["known_evidence", "control_table"]


def _margin(sensitivity: float | None, chance: float | None) -> float | None:
    return None if sensitivity is None or chance is None else sensitivity - chance


def known_evidence(summary: Mapping[str, Any] | str | os.PathLike, rule: LabelRule | str) -> dict[str, Any]:
    """The control's result for a scored run (its ``summary.json`` dict or path, or the run folder).

    Args:
        summary: ``score_run``'s summary, or the path of ``summary.json`` or of the run folder.
        rule: the set's label rule (:func:`retina_fgvis.datasets.synthetic.read_label_rule`) or ``"TYPE:k"``.

    Returns:
        A JSON-ready dict (module docstring); a margin is ``None`` where its type has no lesion.
    """
    rule = LabelRule.parse(rule)
    if not isinstance(summary, Mapping):
        path = Path(summary)
        summary = json.loads((path / "summary.json" if path.is_dir() else path).read_text(encoding="utf-8"))
    success = summary.get("success")
    met = success["successful"] if success else None
    types = {}
    for lesion_type, sensitivity in summary["lesion_sensitivity"].items():
        chance = summary["chance"]["lesion_sensitivity"][lesion_type]
        row = {"role": "deciding" if lesion_type == rule.lesion_type else "independent",
               "n_lesions": summary["n_lesions"][lesion_type], "sensitivity": sensitivity, "chance": chance,
               "above_chance": _margin(sensitivity, chance)}
        if met is not None:
            row.update(n_lesions_met=met["n_lesions"][lesion_type], sensitivity_met=met["lesion_sensitivity"][lesion_type],
                       chance_met=met["chance_lesion_sensitivity"][lesion_type])
            row["above_chance_met"] = _margin(row["sensitivity_met"], row["chance_met"])
        types[lesion_type] = row
    others = [row["above_chance"] for row in types.values() if row["role"] == "independent" and row["above_chance"] is not None]
    return {
        "rule": str(rule), "deciding": rule.lesion_type, "method": summary.get("method"), "n_images": summary["n_images"],
        "n_success": success["n_success"] if success else None, "area_fraction": summary["area_fraction"],
        "lesion_types": types, "deciding_above_chance": types[rule.lesion_type]["above_chance"],
        "independent_above_chance": max(others) if others else None,
    }


def control_table(result: Mapping[str, Any]) -> Table:
    """A rich table of :func:`known_evidence`'s result: one row per lesion type, the deciding one first."""
    rows = sorted(result["lesion_types"].items(), key=lambda item: item[1]["role"] != "deciding")
    met = any("sensitivity_met" in row for _, row in rows)
    success = f", stop met on {result['n_success']} of {result['n_images']}" if result["n_success"] is not None else ""
    table = Table(title=f"Known-evidence control, {result['rule']}: RDR iff at least k lesions of this type"
                        f"{success}. Sensitivity and chance in %, above chance in points; (met): stop met only",
                  box=box.SIMPLE_HEAD)
    for name in ("lesion type", "role", "lesions", "sens.", "chance", "above", *(("(met)", "chance") if met else ())):
        table.add_column(name, justify="left" if name in ("lesion type", "role") else "right")
    for lesion_type, row in rows:
        margin = row["above_chance"]
        cells = [LESION_NAMES.get(lesion_type, lesion_type), row["role"], str(row["n_lesions"]),
                 percent(row["sensitivity"], unit=False), percent(row["chance"], unit=False),
                 "–" if margin is None else f"{100 * margin:+.0f}"]
        if met:
            cells += [percent(row.get("sensitivity_met"), unit=False), percent(row.get("chance_met"), unit=False)]
        table.add_row(*cells, style="bold" if row["role"] == "deciding" else None)
    return table
