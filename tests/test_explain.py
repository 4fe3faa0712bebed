"""``retina_fgvis.explain``: every torchvision architecture, outputs on disk, class-discriminative targets."""
import json

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch

from retina_fgvis.explain import explain, results_table
from retina_fgvis.models.imagenet import ImageNetModelError, load_imagenet_model



@pytest.mark.parametrize("name", ["googlenet", "vgg16", "alexnet", "resnet50"])
def test_every_torchvision_architecture_runs_one_explain_step(name):
    torch.manual_seed(0)  # random initialisation
    [result] = explain([skimage.data.chelsea()], name, weights=None, image_size=64, lam=1e-8, max_iter=1,
                       progress=False)
    [exp] = result.explanations
    assert result.image.shape == (64, 64, 3) and result.image.dtype == np.uint8
    assert exp.mask.shape == (3, 64, 64) and exp.importance.shape == (64, 64)
    assert exp.iterations == 1 and exp.target == result.top_class and exp.primary
    assert 0 <= exp.mask.min() and exp.mask.max() <= 1
    np.testing.assert_allclose(exp.importance, 1 - exp.mask.mean(0), atol=1e-6)   # deletion: high = removed
    assert exp.explanation.shape == (64, 64, 3)


def test_explain_writes_figure_arrays_and_tables(tmp_path):
    model = load_imagenet_model("efficientnet_lite0", image_size=64)
    images = [skimage.data.chelsea(), skimage.data.coffee()]
    results = explain(images, model, targets=["Egyptian cat", 967], lam="search", lam_grid=[1e-6, 1e-8],
                      max_iter=3, out_dir=tmp_path, progress=False)
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 4 and table.equals(results_table(results).reset_index(drop=True).astype(table.dtypes))
    assert list(table["target"]) == [285, 967, 285, 967]
    # the primary rule applies to the image's own top class only
    assert list(table["primary"]) == [c == t for c, t in zip(table["clean_top_class"], table["target"])]
    assert json.loads((tmp_path / "results.json").read_text())[0]["target_name"] == "Egyptian cat"
    assert json.loads((tmp_path / "run.json").read_text())["config"]["lam"] == "search"
    for name in ("image0", "image1"):
        arrays = np.load(tmp_path / name / "arrays.npz")
        assert arrays["mask"].shape == (2, 3, 64, 64) and arrays["importance"].shape == (2, 64, 64)
        assert arrays["explanation"].shape == (2, 64, 64, 3) and arrays["image"].dtype == np.uint8
        assert list(arrays["targets"]) == [285, 967]
        assert (tmp_path / name / "figure.png").stat().st_size > 10_000
    assert not list(tmp_path.rglob("*.tmp*"))


def test_explain_rejects_bad_arguments():
    chelsea = [skimage.data.chelsea()]
    with pytest.raises(ImageNetModelError, match="unknown ImageNet model"):
        explain(chelsea, "inception_v9")
    with pytest.raises(ValueError, match="game"):
        explain(chelsea, "alexnet", weights=None, game="hide")
    with pytest.raises(ValueError, match="lam"):
        explain(chelsea, "alexnet", weights=None, lam="auto")
    with pytest.raises(ValueError, match="images"):
        explain([], "alexnet", weights=None)
    with pytest.raises(ImageNetModelError, match="target"):
        explain(chelsea, "alexnet", weights=None, image_size=64, targets=["unicorn"])
