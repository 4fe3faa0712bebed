"""Two CPU processes under torchrun (gloo) for one short epoch; rank 0 alone writes the run."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_roc_auc

from retina_fgvis.datasets.fundus import load_fundus
from retina_fgvis.models.checkpoint import load_classifier, read_checkpoint
from retina_fgvis.training import train
from retina_fgvis.training.data import make_transforms
from retina_fgvis.training.handlers import youden_operating_point

#: Recorded vs recomputed validation metrics: the same model on the same images, only the batching
#: differs (float32 sums in another order), so they agree to float32 rounding.
METRIC_TOLERANCE = 1e-6

SCRIPT = """
import sys
from retina_fgvis.training import TrainConfig, train
result = train(TrainConfig(dataset="eyepacs", data_dir=sys.argv[1], out=sys.argv[2], epochs=1, image_size=48,
                           width=4, batch_size=4, device="cpu", progress=False, norm_samples=8))
print("rank-done", result.is_main, result.metrics["epoch"])
"""


def test_two_gloo_processes_write_one_checkpoint_that_predicts_like_a_single_process_one(
        tiny_eyepacs, tiny_config, tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tiny_eyepacs), str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("rank-done")) == [
        "rank-done False 1", "rank-done True 1"]
    assert {p.name for p in out.iterdir()} == {"run.json", "split.csv", "metrics.csv", "best.pt", "last.pt"}
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1]

    single = train(tiny_config(tiny_eyepacs, tmp_path / "single", epochs=1, batch_size=4))
    ddp_ckpt, single_ckpt = read_checkpoint(out / "last.pt"), read_checkpoint(single.last_checkpoint)
    assert ddp_ckpt["model"].keys() == single_ckpt["model"].keys()  # no DDP "module." prefix
    assert ddp_ckpt["meta"].keys() == single_ckpt["meta"].keys()
    assert ddp_ckpt["meta"]["mean"] == single_ckpt["meta"]["mean"]
    assert (out / "split.csv").read_text() == (tmp_path / "single" / "split.csv").read_text()

    ddp, one = load_classifier(out / "last.pt"), load_classifier(single.last_checkpoint)
    paths = pd.read_csv(out / "split.csv")["path"][:6]
    images = np.stack([load_fundus(p, size=48)[0] for p in paths])
    p_ddp, p_one = ddp.predict_proba(images), one.predict_proba(images)
    assert p_ddp.shape == p_one.shape == (6,)
    assert np.isfinite(p_ddp).all() and ((p_ddp >= 0) & (p_ddp <= 1)).all()
    assert ddp.normalization == one.normalization
    _assert_metrics_are_the_checkpoints(out)


def _assert_metrics_are_the_checkpoints(out):
    """The run's recorded validation AUC, sensitivity/specificity and operating point, recomputed in one process
    from its saved ``last.pt`` over the whole validation split."""
    classifier = load_classifier(out / "last.pt")
    split = pd.read_csv(out / "split.csv")
    val = split[split["split"] == "val"]
    mean, std = classifier.normalization
    transform = make_transforms(classifier.image_size, mean, std, train=False)
    inputs = torch.stack([transform({"image": path, "label": 0})["image"] for path in val["path"]])
    with torch.no_grad():
        probs = classifier.model(inputs).softmax(dim=1)[:, 1]
    labels = val["label"].to_numpy()
    row = pd.read_csv(out / "metrics.csv").iloc[-1]
    threshold, sensitivity, specificity = youden_operating_point(probs.numpy(), labels)
    assert row["val_auc"] == pytest.approx(compute_roc_auc(probs, torch.tensor(labels)), abs=METRIC_TOLERANCE)
    assert row["operating_point"] == pytest.approx(threshold, abs=METRIC_TOLERANCE)
    assert (row["val_sensitivity"], row["val_specificity"]) == (sensitivity, specificity)
    assert classifier.meta["operating_point"] == pytest.approx(threshold, abs=METRIC_TOLERANCE)
