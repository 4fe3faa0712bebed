"""The paper's ImageNet studies on the pretrained EfficientNet-Lite0: A1 defense, A2 entropy, A3 colour swap."""
import math

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
from PIL import Image

from retina_fgvis.evaluation.studies import (COLOUR_SWAPS, adversarial_evidence, adversarial_table, colour_swap,
                                colour_swap_table, entropy_table, read_labelled_images, reference_entropy)
from retina_fgvis.models.imagenet import imagenet_class_names, load_imagenet_model



@pytest.fixture(scope="module")
def lite():
    return load_imagenet_model("efficientnet_lite0", image_size=96)


def test_adversarial_evidence_shows_the_defense_effect(tmp_path):
    model = load_imagenet_model("efficientnet_lite0", image_size=64)
    frame = adversarial_evidence(model, classes=4, max_iter=60, out_dir=tmp_path, progress=False)
    shares = adversarial_table(frame)["efficientnet_lite0"]
    # measured (64 px, 60 steps): 3 of 4 classes generated without the defense, none with it
    assert shares["No defense"] >= 50 and shares["Defended"] == 0
    black = model.from_pixels(torch.zeros(1, 3, 64, 64))
    with torch.no_grad():
        omitted = {int(model.model(black).argmax()), int(model.model(torch.zeros_like(black)).argmax())}
    assert frame["class_id"].nunique() == 4 and not omitted & set(frame["class_id"])
    assert len(pd.read_csv(tmp_path / "adversarial_evidence.csv")) == 8
    with pytest.raises(ValueError, match="classes"):
        adversarial_evidence(model, classes=0)


def test_entropy_puts_the_zero_reference_above_a_photo(lite, tmp_path):
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]
    frame = reference_entropy(photos, lite, n_instances=3, out_dir=tmp_path, progress=False)
    by = frame.set_index(["reference", "sigma"], drop=False)
    zero, image = by.loc[("zero image", None), "mean"].item(), by.loc[("image", None), "mean"].item()
    assert zero > image + 1 and by.loc[("image", None), "n"].item() == 3
    assert frame["mean"].iloc[-1] == pytest.approx(math.log(1000)) and (frame["mean"] <= math.log(1000) + 1e-6).all()
    assert list(frame["reference"]) == ["zero image"] + ["Gaussian noise image"] * 2 + ["blurred image"] * 2 + [
        "image", "maximum"]
    assert (frame.loc[frame["reference"] == "Gaussian noise image", "std"] > 0).all()
    table = entropy_table(frame)
    assert list(table.index) == ["Zero image", "Gaussian noise image (σn = 8)", "Gaussian noise image (σn = 32)",
                                 "Blurred image (σb = 5)", "Blurred image (σb = 10)", "Image",
                                 "Maximum (1000 classes)"]
    assert table.loc["Maximum (1000 classes)", "efficientnet_lite0"] == "6.91"
    assert (tmp_path / "reference_entropy.csv").is_file()


def _write_photos(folder, images):
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index}.png")


def test_colour_swap_on_a_tiny_labelled_folder(lite, tmp_path):
    chelsea, coffee = skimage.data.chelsea(), skimage.data.coffee()
    data = tmp_path / "val"
    _write_photos(data / "285", [chelsea, np.ascontiguousarray(chelsea[:, ::-1])])   # index-named folder
    _write_photos(data / "espresso", [coffee, np.ascontiguousarray(coffee[:, ::-1])])  # name-named folder
    _write_photos(data / "zebra", [coffee])                                            # never correct
    frame = colour_swap(data, lite, out_dir=tmp_path / "out", progress=False)
    assert list(frame.columns) == ["class_id", "class_name", "n_total", "n_images", "mean", "RBG", "GRB"]
    rows = frame.set_index("class_name")
    assert rows.loc["espresso", "n_images"] == 2 and rows.loc["zebra", "n_images"] == 0
    assert np.isnan(rows.loc["zebra", "mean"]) and frame["class_name"].iloc[-1] == "zebra"   # undefined: last
    kept = frame.dropna()
    assert kept["mean"].is_monotonic_increasing and kept[["RBG", "GRB"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (kept["mean"] == kept[["RBG", "GRB"]].mean(axis=1)).all()
    assert len(pd.read_csv(tmp_path / "out" / "colour_swap.csv")) == 3
    table = colour_swap_table(frame, rows=1)
    assert list(table.columns) == ["ID", "Class name", "#Images", "Avg. RBG, GRB", "RBG", "GRB"]
    # the same images listed in a CSV give the same result
    listing = tmp_path / "labels.csv"
    files = sorted((data / "espresso").glob("*.png")) + sorted((data / "285").glob("*.png"))
    pd.DataFrame({"file": [f.relative_to(tmp_path) for f in files], "label": ["967", "967", 285, 285]}).to_csv(
        listing, index=False)
    from_csv = colour_swap(listing, lite, progress=False).set_index("class_id")
    assert from_csv.loc[967, "mean"] == rows.loc["espresso", "mean"]


def test_swaps_are_the_two_cyclic_permutations_of_bgr():
    red = np.array([1.0, 0.0, 0.0])        # RGB
    # BGR -> RBG puts R where B was: red becomes blue; BGR -> GRB puts B where R was: red becomes green
    assert list(red[list(COLOUR_SWAPS["RBG"])]) == [0, 0, 1]
    assert list(red[list(COLOUR_SWAPS["GRB"])]) == [0, 1, 0]


def test_labelled_image_errors(tmp_path):
    names = imagenet_class_names()
    (tmp_path / "n02123045").mkdir()
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "n02123045" / "a.png")
    with pytest.raises(ValueError, match="synsets: .*WordNet id n02123045"):
        read_labelled_images(tmp_path, names)
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)).replace("n00000285", "n02123045"))
    assert read_labelled_images(tmp_path, names, synsets)["label"].tolist() == [285]
    (tmp_path / "unicorn").mkdir()
    (tmp_path / "unicorn" / "b.png").write_bytes(b"")
    with pytest.raises(ValueError, match="'unicorn' is not a class index"):
        read_labelled_images(tmp_path, names, synsets)
    listing = tmp_path / "bad.csv"
    listing.write_text("path,class\nx.png,1\n")
    with pytest.raises(ValueError, match="needs the columns 'file' and 'label'"):
        read_labelled_images(listing, names)
    with pytest.raises(ValueError, match="neither a folder"):
        read_labelled_images(tmp_path / "missing", names)
