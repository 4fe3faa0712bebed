"""Deletion/insertion curves: the paper's schedule, true-fraction AUC, batching, and FGVis vs Grad-CAM on real photos."""
import json

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
from torch import nn

from retina_fgvis.evaluation.deletion import (DeletionCurve, InsertionCurve, deletion_study, fgvis_deletion, paper_fractions,
                                 summarize_deletion)
from retina_fgvis.attribution import GradCAM
from retina_fgvis.models.imagenet import load_imagenet_model



class LeftEvidence(nn.Module):
    """Class-1 logit = 20 × mean of channel 0 over the left half of the image; class-0 logit = 0."""

    def forward(self, x):
        evidence = 20 * x[:, 0, :, : x.shape[3] // 2].mean((1, 2))
        return torch.stack([torch.zeros_like(evidence), evidence], 1)


def halves(n=1, size=8):
    left = torch.zeros(n, 1, size, size)
    left[..., : size // 2] = 1
    return left, 1 - left


def test_paper_schedule_has_176_points():
    fractions = paper_fractions()
    assert len(fractions) == 176 and fractions[0] == 0 and fractions[-1] == 1
    steps = fractions.diff()
    assert torch.allclose(steps[:100], torch.tensor(0.0025, dtype=torch.float64))
    assert torch.allclose(steps[100:], torch.tensor(0.01, dtype=torch.float64))


def test_auc_uses_the_true_removed_fraction():
    x = torch.ones(1, 3, 7, 7)                       # 49 pixels: 0.25 % of them rounds to 0
    left, _ = halves(size=7)
    metric = DeletionCurve(LeftEvidence())
    aucs = metric.update(x, left)
    counts = torch.round(paper_fractions() * 49)
    assert torch.equal(metric.removed_fraction, counts / 49)
    assert metric.removed_fraction[1] == 0 and metric.curves[0, 0] == metric.curves[0, 1]
    assert torch.allclose(aucs, torch.trapezoid(metric.curves, x=counts / 49, dim=1))


def test_faithful_ranking_beats_reversed_ranking_both_ways():
    model = LeftEvidence().train()
    x = torch.ones(2, 3, 8, 8)
    good, bad = halves(2)
    deletion, insertion = DeletionCurve(model), InsertionCurve(model)
    d_good, d_bad = deletion.update(x, good), deletion.update(x, bad)
    i_good, i_bad = insertion.update(x, good), insertion.update(x, bad)
    assert (d_good < d_bad - 0.2).all() and (i_good > i_bad + 0.2).all()
    # deletion starts at the clean image and ends at the zero substrate (logits 0, 0 → p = 0.5)
    assert torch.allclose(deletion.curves[:, 0], torch.sigmoid(torch.tensor(20.0)).double())
    assert torch.allclose(deletion.curves[:, -1], torch.tensor(0.5, dtype=torch.float64))
    assert torch.allclose(insertion.curves[:, -1], deletion.curves[:, 0])
    assert deletion.summary() == {"mode": "deletion", "auc": pytest.approx(float(deletion.aucs.mean())),
                                  "auc_std": pytest.approx(float(deletion.aucs.std())), "n_images": 4,
                                  "points": 176, "substrate": "zero"}
    assert model.training  # the model's mode is restored
    deletion.reset()
    with pytest.raises(ValueError, match="no curves yet"):
        deletion.summary()


def test_batched_equals_one_image_at_a_time_and_ties_are_seeded():
    model = LeftEvidence()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=generator)
    importance = torch.rand(3, 1, 8, 8, generator=generator).round(decimals=1)   # many ties
    batched = DeletionCurve(model, batch_size=7).compute(x, importance)[0]
    single = torch.cat([DeletionCurve(model).compute(x[i:i + 1], importance[i:i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched, single)
    flat = torch.zeros(1, 1, 8, 8)
    first, again = (DeletionCurve(model, seed=0).compute(x[:1], flat)[0] for _ in range(2))
    other = DeletionCurve(model, seed=1).compute(x[:1], flat)[0]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_black_substrate_and_bad_arguments():
    model = LeftEvidence()
    x = torch.ones(1, 3, 8, 8)
    left, _ = halves()
    black = DeletionCurve(model, substrate="black", normalization=((0.5,) * 3, (0.25,) * 3))
    curves, _ = black.compute(x, left)
    assert curves[0, -1] < 1e-6                      # pixel black is -2 after normalisation: logit -40
    assert black.substrate_name == "black"
    with pytest.raises(ValueError, match="normalization"):
        DeletionCurve(model, substrate="black").compute(x, left)
    with pytest.raises(ValueError, match="importance: expected shape"):
        DeletionCurve(model).compute(x, left[:, :, :4])
    with pytest.raises(ValueError, match="fractions"):
        DeletionCurve(model, fractions=[0.1, 1.0])
    with pytest.raises(ValueError, match="mode"):
        InsertionCurve(model, "both")


@pytest.fixture(scope="module")
def photos():
    """EfficientNet-Lite0 (pretrained) on three scikit-image photos at 96 px, FGVis with the A4.1 game,
    learning rate and stop rule but one λ (1e-8) and at most 300 iterations (150 left the coffee photo short of
    its stop with one thread: a failed optimisation that depends on round-off), and Grad-CAM."""
    model = load_imagenet_model("efficientnet_lite0", image_size=96)
    x = model.preprocess_batch([skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()])
    result = fgvis_deletion(model.model, x, normalization=model.normalization, max_iter=300, lam_grid=[1e-8])
    cam = GradCAM(model.model, target_layer=model.cam_layer).attribute(x, target=result.target)
    return model, x, result, cam


def test_deletion_game_drops_the_predicted_class(photos):
    model, x, result, _ = photos
    with torch.no_grad():
        predicted = model.model(x).argmax(1)
    assert torch.equal(result.target, predicted)
    assert result.success.all()                                        # the A4.1 stop met on every photo
    assert (result.top_class != predicted).all()                       # the class shifted on every photo
    assert (result.score < 0.1 * result.initial_score).all()


def test_fgvis_deletion_auc_is_lower_than_gradcam(photos):
    model, x, result, cam = photos
    fgvis = DeletionCurve(model.model, batch_size=16).update(x, result.importance, result.target)
    gradcam = DeletionCurve(model.model, batch_size=16).update(x, cam, result.target)
    # measured: FGVis 0.011 / 0.094 / 0.012, Grad-CAM 0.400 / 0.070 / 0.023 (mean 0.039 vs 0.164)
    assert fgvis.mean() < 0.5 * gradcam.mean()


def test_deletion_study_writes_tables_and_plot(tmp_path):
    model = load_imagenet_model("efficientnet_lite0", image_size=64)
    frame = deletion_study([skimage.data.coffee()], model, max_iter=3, fractions=np.linspace(0, 1, 11),
                           out_dir=tmp_path, progress=False)
    assert list(frame["method"]) == ["fgvis", "gradcam", "occlusion", "random"]
    assert frame[["deletion_auc", "insertion_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    written = pd.read_csv(tmp_path / "deletion.csv")
    assert len(written) == 4 and set(written["substrate"]) == {"zero"}
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert len(curves) == 4 * 2 * 11 and curves["fraction"].max() == 1
    assert (tmp_path / "deletion_curves.png").stat().st_size > 10_000
    config = json.loads((tmp_path / "deletion_run.json").read_text())["config"]
    assert config["substrate"] == "zero" and config["points"] == 11
    summary = summarize_deletion(frame)
    assert list(summary["method"]) == ["fgvis", "gradcam", "occlusion", "random"]
    assert (summary["n_images"] == 1).all()
    # success is FGVis's own criterion; the baselines have none
    assert frame.loc[frame.method == "fgvis", "success"].isin([True, False]).all()
    assert frame.loc[frame.method != "fgvis", "success"].isna().all()
    assert summary["n_success"].iloc[0] == int(frame["success"].iloc[0]) and summary["n_success"].iloc[1:].isna().all()
    with pytest.raises(ValueError, match="methods"):
        deletion_study([skimage.data.coffee()], model, methods=["rise"])


def test_plotting_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """plot_curves draws on a bare Figure and never calls matplotlib.use: the caller's backend stays."""
    import subprocess
    import sys

    script = (
        "import matplotlib, pandas as pd\n"
        "matplotlib.use('svg')\n"
        "from retina_fgvis.evaluation.deletion import plot_curves\n"
        "curves = pd.DataFrame({'method': 'm', 'mode': ['deletion', 'deletion', 'insertion', 'insertion'],"
        " 'fraction': [0, 1, 0, 1], 'mean': [1, 0, 0, 1]})\n"
        f"plot_curves(curves, {str(tmp_path / 'curves.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg"
    assert (tmp_path / "curves.png").stat().st_size > 0
