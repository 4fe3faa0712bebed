"""Two CPU processes under torchrun (gloo); rank 0 alone writes the run, and without the per-process
randomness (batch-norm statistics, augmentation, dropout) they train the single-process model."""
import json
import os
import shutil
import subprocess
import sys
import warnings

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

#: Two processes of batch 4 against one of batch 8, without batch norm, augmentation or dropout: the same
#: images per step, gradients averaged by DDP, so the same model up to float32 summation order. Measured
#: (seeds 0–2, 2 epochs, 2-core CPU): max |Δp| 6e-8 on the validation images, weights ‖Δw‖/‖w‖ ≤ 1.1e-7,
#: train loss |Δ| ≤ 4.1e-8 (both sides one thread per process). With batch norm and augmentation
#: (per-process statistics and random streams) the two differ for real: max |Δp| 0.02–0.10, ‖Δw‖/‖w‖ 0.07–0.08.
DDP_TOLERANCE = 1e-6

SCRIPT = """
import json, sys
from retina_fgvis.training import TrainConfig, train
settings = dict(dataset="eyepacs", data_dir=sys.argv[1], out=sys.argv[2], image_size=48, width=4, batch_size=4,
                device="cpu", progress=False, norm_samples=8)
result = train(TrainConfig(**{**settings, **json.loads(sys.argv[3])}))
print("rank-done", result.is_main, result.metrics["epoch"], flush=True)
"""
#: The trainer's own per-process randomness, off: batch-norm statistics, augmentation, dropout.
DETERMINISTIC = {"network_options": {"batch_norm": False}, "augment": False, "dropout": 0.0}


def _torchrun(tmp_path, data, out, processes=2, **settings):
    """``train`` in ``processes`` processes under torchrun (1: a plain process), one thread each."""
    script = tmp_path / "launch.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launcher, str(script), str(data), str(out), json.dumps(settings)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    if done.returncode and _aborted_after_finishing(done, processes):
        # Rarely (in some full-suite runs on 2 cores, in none of 14 targeted runs) a gloo rank aborts while its
        # interpreter shuts down, after train() has returned on every rank; rerun once, visibly (docs/training.md).
        warnings.warn(f"torchrun: a rank aborted at exit after finishing; rerunning once\n{done.stderr[-1000:]}")
        shutil.rmtree(out)
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _aborted_after_finishing(done: subprocess.CompletedProcess, processes: int) -> bool:
    """Every rank printed that train() returned, and one was then killed by SIGABRT."""
    finished = sum(line.startswith("rank-done") for line in done.stdout.splitlines()) == processes
    return finished and "SIGABRT" in done.stderr


def test_two_gloo_processes_write_one_checkpoint_in_the_single_process_format(tiny_eyepacs, tiny_config, tmp_path):
    out = tmp_path / "ddp"
    done = _torchrun(tmp_path, tiny_eyepacs, out, epochs=1)
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


def test_two_gloo_processes_train_the_single_process_model(tiny_eyepacs, tmp_path):
    """2 processes × batch 4 = 1 process × batch 8, to float32 round-off (:data:`DDP_TOLERANCE`)."""
    out = tmp_path / "ddp"
    _torchrun(tmp_path, tiny_eyepacs, out, epochs=2, lr=3e-3, **DETERMINISTIC)
    # The single process also runs one thread: AdamW divides by √v, so a parameter with a tiny gradient
    # would turn another thread count's summation order into a visible difference.
    single = tmp_path / "single"
    _torchrun(tmp_path, tiny_eyepacs, single, processes=1, epochs=2, batch_size=8, lr=3e-3, **DETERMINISTIC)
    ddp, one = load_classifier(out / "last.pt"), load_classifier(single / "last.pt")
    weights = [torch.cat([p.detach().flatten() for p in model.model.parameters()]) for model in (ddp, one)]
    assert float((weights[0] - weights[1]).norm() / weights[1].norm()) <= DDP_TOLERANCE
    split = pd.read_csv(out / "split.csv")
    val = split[split["split"] == "val"]
    images = np.stack([load_fundus(p, size=48)[0] for p in val["path"]])
    assert np.abs(ddp.predict_proba(images) - one.predict_proba(images)).max() <= DDP_TOLERANCE
    rows = pd.read_csv(out / "metrics.csv"), pd.read_csv(single / "metrics.csv")
    assert np.abs(rows[0]["train_loss"] - rows[1]["train_loss"]).max() <= DDP_TOLERANCE
    assert rows[0]["val_auc"].tolist() == rows[1]["val_auc"].tolist()


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
