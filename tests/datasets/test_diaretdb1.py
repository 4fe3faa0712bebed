"""DiaretDB1 v1.1 and v2.1 read from fixtures in the published layouts; consensus checked by hand."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fundus_files import fundus_array, write_image

from retina_fgvis.datasets import LESION_TYPES, DatasetError, open_diaretdb1

H, W = 40, 56
Y, X = np.mgrid[0:H, 0:W].astype(float)


def circle(cx, cy, r):
    return (X - cx) ** 2 + (Y - cy) ** 2 < r**2


def ellipse(cx, cy, rx, ry, degrees):
    t = np.deg2rad(degrees)  # counter-clockwise as displayed (y down)
    dx, dy = X - cx, Y - cy
    u, v = dx * np.cos(t) - dy * np.sin(t), dx * np.sin(t) + dy * np.cos(t)
    return (u / rx) ** 2 + (v / ry) ** 2 < 1


def rect(x0, y0, x1, y1):
    return (X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)


# Per expert: (markingtype, confidence, region XML, hand-computed region). Overlapping circles,
# ellipses (one rotated) and polygons (one L-shaped) of the same lesions.
MARKINGS = {
    1: [("Haemorrhages", "High", "<circleregion><centroid><coords2d>20,18</coords2d></centroid><radius>6</radius></circleregion>", circle(20, 18, 6)),
        ("Hard_exudates", "Low", "<polygonregion>" + "".join(f"<coords2d>{p}</coords2d>" for p in ["30,8", "40,8", "40,16", "30,16"]) + "</polygonregion>", rect(30, 8, 40, 16)),
        ("Disc", "High", "<circleregion><centroid><coords2d>45,20</coords2d></centroid><radius>5</radius></circleregion>", None)],
    2: [("Haemorrhages", "Medium", '<ellipseregion><centroid><coords2d>21,18</coords2d></centroid><radius direction="x">7</radius><radius direction="y">4</radius><angle>0</angle></ellipseregion>', ellipse(21, 18, 7, 4, 0)),
        ("Hard_exudates", "Medium", "<polygonregion>" + "".join(f"<coords2d>{p}</coords2d>" for p in ["32,10", "42,10", "42,18", "32,18"]) + "</polygonregion>", rect(32, 10, 42, 18))],
    3: [("Haemorrhages", "Medium", "<circleregion><centroid><coords2d>22,19</coords2d></centroid><radius>5</radius></circleregion>", circle(22, 19, 5)),
        ("Hard_exudates", "High", "<polygonregion>" + "".join(f"<coords2d>{p}</coords2d>" for p in ["29,9", "38,9", "38,12", "33,12", "33,20", "29,20"]) + "</polygonregion>", rect(29, 9, 38, 12) | rect(29, 9, 33, 20))],
    4: [("Haemorrhages", "High", '<ellipseregion><centroid><coords2d>20,19</coords2d></centroid><radius direction="x">6</radius><radius direction="y">3</radius><angle>30</angle></ellipseregion>', ellipse(20, 19, 6, 3, 30)),
        ("Red_small_dots", "High", "<circleregion><centroid><coords2d>10,25</coords2d></centroid><radius>2</radius></circleregion>", circle(10, 25, 2))],
}
TYPES = {"Haemorrhages": "hemorrhages", "Hard_exudates": "hard_exudates", "Red_small_dots": "red_small_dots", "Soft_exudates": "soft_exudates"}
LEVEL = {"Low": 1, "Medium": 2, "High": 3}


def hand_levels() -> dict[str, np.ndarray]:
    """lesion type -> 4×H×W highest confidence level per expert, computed from the formulas above."""
    levels = {lesion: np.zeros((4, H, W), int) for lesion in LESION_TYPES}
    for expert, markings in MARKINGS.items():
        for kind, confidence, _, region in markings:
            if kind in TYPES:
                level = levels[TYPES[kind]][expert - 1]
                level[region] = np.maximum(level[region], LEVEL[confidence])
    return levels


def xml_file(markings) -> str:
    body = "".join(
        f"<marking>\n  {region}\n  <representativepoint><coords2d>1,1</coords2d></representativepoint>\n"
        f"  <confidencelevel> {confidence} </confidencelevel>\n  <markingtype>{kind}</markingtype>\n</marking>\n"
        for kind, confidence, region, _ in markings
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<imgannotooldata>\n<header><creator>expert</creator>'
            '<software version="1.0">imgannotool</software></header>\n<imagename>x.png</imagename>\n'
            f"<markinglist>\n{body}</markinglist>\n</imgannotooldata>\n")


def write_v21(root: Path) -> Path:
    release = root / "ddb1_v02_01"
    for number, seed in ((1, 0), (2, 1)):
        write_image(release / "images" / f"diaretdb1_image00{number}.png", fundus_array(H, W, seed))
        for expert in range(1, 5):
            markings = MARKINGS[expert] if number == 1 else []
            path = release / "groundtruth" / f"diaretdb1_image00{number}_0{expert}.xml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(xml_file(markings))
    line = "images/diaretdb1_image00{0}.png " + " ".join(f"groundtruth/diaretdb1_image00{{0}}_0{e}.xml" for e in range(1, 5)) + "\n"
    (release / "ddb1_v02_01_test.txt").write_text(line.format(1))
    (release / "ddb1_v02_01_train.txt").write_text(line.format(2))
    return release


def write_v11(root: Path) -> Path:
    release = root / "diaretdb1_v_1_1"
    res = release / "resources"
    levels = hand_levels()
    for number, seed in ((1, 0), (2, 1)):
        write_image(res / "images" / "ddb1_fundusimages" / f"image00{number}.png", fundus_array(H, W, seed))
        for lesion, folder in zip(LESION_TYPES, ["hardexudates", "softexudates", "hemorrhages", "redsmalldots"]):
            grey = (21 * levels[lesion].sum(axis=0)).astype(np.uint8) if number == 1 else np.zeros((H, W), np.uint8)
            path = res / "images" / "ddb1_groundtruth" / folder / f"image00{number}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), grey)
    fmask = res / "images" / "ddb1_fundusmask" / "fmask.tif"
    fmask.parent.mkdir(parents=True)
    cv2.imwrite(str(fmask), (fundus_array(H, W).max(axis=2) > 0).astype(np.uint8) * 255)
    (res / "traindatasets").mkdir()
    (res / "traindatasets" / "trainset.txt").write_text("images/ddb1_fundusimages/image002.png\n")
    (res / "testdatasets").mkdir()
    (res / "testdatasets" / "testset.txt").write_text("images/ddb1_fundusimages/image001.png\n")
    return release


@pytest.fixture
def v21(tmp_path):
    return write_v21(tmp_path / "v21")


@pytest.fixture
def v11(tmp_path):
    return write_v11(tmp_path / "v11")


@pytest.mark.parametrize("min_experts, min_confidence", [(3, "Low"), (2, "Low"), (1, "High"), (2, "Medium")])
def test_v21_consensus_matches_hand_computed(v21, min_experts, min_confidence):
    ds = open_diaretdb1(v21, min_experts=min_experts, min_confidence=min_confidence)
    assert ds.version == "2.1"
    sample = ds.load("image001")
    assert sample.image.shape == (H, W, 3) and sample.fov.shape == (H, W)
    for lesion, levels in hand_levels().items():
        expected = (levels >= LEVEL[min_confidence]).sum(axis=0) >= min_experts
        np.testing.assert_array_equal(sample.lesions[lesion], expected, err_msg=lesion)
    if (min_experts, min_confidence) == (3, "Low"):
        assert sample.lesions["hemorrhages"].sum() > 20 and sample.lesions["hard_exudates"].sum() > 20
        assert not sample.lesions["red_small_dots"].any()  # one expert only


def test_v11_official_rule_matches_hand_computed_and_v21(v11, v21):
    ds1 = open_diaretdb1(v11.parent)  # the parent folder is searched
    assert ds1.version == "1.1" and ds1.rule == "official"
    ds2 = open_diaretdb1(v21, rule="official")
    a, b = ds1.load("image001"), ds2.load("image001")
    for lesion, levels in hand_levels().items():
        expected = 21 * levels.sum(axis=0) >= 189
        np.testing.assert_array_equal(a.lesions[lesion], expected, err_msg=lesion)
        np.testing.assert_array_equal(b.lesions[lesion], expected, err_msg=lesion)
    assert a.lesions["red_small_dots"].sum() == 0  # one "High" expert = 63 < 189
    assert a.lesions["hemorrhages"].any()  # where all four overlap: 63 + 42 + 42 + 63 = 210
    assert not a.lesions["hard_exudates"].any()  # three experts, 21 + 42 + 63 = 126: only the paper's rule
    assert a.fov.sum() == (fundus_array(H, W).max(axis=2) > 0).sum()  # v1.1 ships its FOV mask
    assert ds1.image_ids("train") == ["image002"] and ds1.image_ids("test") == ["image001"]
    assert ds2.image_ids("all") == ["image001", "image002"]


def test_both_layouts_load_resized_identically(v11, v21):
    ds1, ds2 = open_diaretdb1(v11, grey_threshold=0.5), open_diaretdb1(v21, rule="official", grey_threshold=0.5)
    a, b = ds1.load("image001", size=24), ds2.load("image001", size=24)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (24, 24, 3) and a.fov.shape == (24, 24)
    for lesion in LESION_TYPES:
        assert a.lesions[lesion].shape == (24, 24)
        np.testing.assert_array_equal(a.lesions[lesion], b.lesions[lesion])
    assert a.lesions["hard_exudates"].any()
    graham = ds2.load("image001", size=24, graham=True)
    assert graham.image.shape == (24, 24, 3) and (graham.image[~graham.fov] == 128).all()


def _load_error(root, image_id="image001", **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        open_diaretdb1(root, **kwargs).load(image_id)
    return str(caught.value)


def test_ground_truth_of_another_size(v11, v21):
    gt = v11 / "resources/images/ddb1_groundtruth/hemorrhages/image001.png"
    cv2.imwrite(str(gt), np.zeros((H * 2, W * 2), np.uint8))
    message = _load_error(v11)
    assert str(gt) in message and f"{W * 2}×{H * 2}" in message
    xml = v21 / "groundtruth/diaretdb1_image001_02.xml"
    xml.write_text(xml_file([("Haemorrhages", "High", "<circleregion><centroid><coords2d>700,500</coords2d></centroid><radius>6</radius></circleregion>", None)]))
    assert str(xml) in _load_error(v21) and "does not fit" in _load_error(v21)


def test_coloured_or_missing_v11_ground_truth(v11):
    gt = v11 / "resources/images/ddb1_groundtruth/redsmalldots/image001.png"
    write_image(gt, fundus_array(H, W))
    assert str(gt) in _load_error(v11) and "coloured" in _load_error(v11)
    gt.unlink()
    assert str(gt) in _load_error(v11) and "not found" in _load_error(v11)


@pytest.mark.parametrize(
    "content, words",
    [(None, "not found"), ("<imgannotooldata><markinglist><marking>", "malformed XML"),
     ("<imgannotooldata></imgannotooldata>", "no <markinglist>"),
     (xml_file([("Haemorrhages", "Sure", "<circleregion><centroid><coords2d>20,18</coords2d></centroid><radius>6</radius></circleregion>", None)]), "unknown confidencelevel"),
     (xml_file([("Haemorrhages", "High", "<pointregion/>", None)]), "malformed region"),
     (xml_file([("Haemorrhages", "High", "<circleregion><centroid><coords2d>20;18</coords2d></centroid><radius>6</radius></circleregion>", None)]), "malformed region"),
     (xml_file([("Haemorrhages", "High", "<circleregion><centroid><coords2d>20,18</coords2d></centroid><radius>-4</radius></circleregion>", None)]), "marking 1: malformed region (radius '-4' is not a finite number > 0)"),
     (xml_file([("Haemorrhages", "High", "<ellipseregion><centroid><coords2d>20,18</coords2d></centroid><radius direction='x'>nan</radius><radius direction='y'>3</radius><angle>0</angle></ellipseregion>", None)]), "radius 'nan' is not a finite number > 0"),
     (xml_file([("Haemorrhages", "High", "<circleregion><centroid><coords2d>inf,18</coords2d></centroid><radius>6</radius></circleregion>", None)]), "coordinates 'inf,18' are not finite"),
     (xml_file([("Disc", "High", "<circleregion><centroid><coords2d>20,18</coords2d></centroid><radius>6</radius></circleregion>", None),
                ("Haemorhages", "High", "<circleregion><centroid><coords2d>20,18</coords2d></centroid><radius>6</radius></circleregion>", None)]),
      "marking 2: unknown markingtype 'Haemorhages'")],
)
def test_missing_or_malformed_expert_xml(v21, content, words):
    xml = v21 / "groundtruth/diaretdb1_image001_03.xml"
    if content is None:
        xml.unlink()
    else:
        xml.write_text(content)
    message = _load_error(v21)
    assert str(xml) in message and words in message


def test_release_detection_and_settings_errors(tmp_path, v11, v21):
    with pytest.raises(DatasetError, match="no DiaretDB1"):
        open_diaretdb1(tmp_path / "v21" / "ddb1_v02_01" / "images")
    with pytest.raises(DatasetError, match="several releases"):
        open_diaretdb1(tmp_path)
    assert open_diaretdb1(tmp_path, version="2.1").version == "2.1"
    with pytest.raises(DatasetError, match="number of experts cannot be recovered"):
        open_diaretdb1(v11, rule="experts")
    with pytest.raises(ValueError, match="min_experts"):
        open_diaretdb1(v21, min_experts=5)
    with pytest.raises(ValueError, match="min_confidence"):
        open_diaretdb1(v21, min_confidence="Certain")
    with pytest.raises(ValueError, match="image_id"):
        open_diaretdb1(v21).load("001")
    (v21 / "ddb1_v02_01_train.txt").unlink()
    with pytest.raises(DatasetError, match="ddb1_v02_01_train.txt: split file not found"):
        open_diaretdb1(v21).image_ids("train")
    missing = v21 / "images" / "diaretdb1_image003.png"
    with pytest.raises(DatasetError, match="image003.png: file not found"):
        open_diaretdb1(v21).load("image003")
    assert missing.parent.is_dir()
