"""Evaluation of explanations; imports the core package, never the reverse.

Localization against lesion markings (fundus):

* :mod:`retina_fgvis.evaluation.localization`: ``score_run`` and the stateful metrics (``LesionSensitivity``,
  ``ImageDetection``, ``PixelOverlap``, ``FalsePositiveComponents``);
* :mod:`retina_fgvis.evaluation.compare`: ``compare_runs`` (own threshold, matched area, chance control, FROC,
  intervals and where they overlap);
* :mod:`retina_fgvis.evaluation.froc`: ``FROCCurve`` (sensitivity against false-positive components per image
  over a sweep of operating points) and ``roc_score`` (the Retinopathy Online Challenge score);
* :mod:`retina_fgvis.evaluation.bootstrap`: bootstrap confidence intervals over images;
* :mod:`retina_fgvis.evaluation.report`: ``write_report`` (the static HTML report for clinicians);
* :mod:`retina_fgvis.evaluation.control`: ``known_evidence`` (the known-evidence control on a label-rule set).

The other submodules (deletion metric, studies) describe themselves in their docstrings.
Submodules are imported explicitly (``from retina_fgvis.evaluation.localization import score_run``) so that
using one part does not load the others.
"""
