import numpy as np
import pytest

from retina_fgvis.viz import DETECTION_COLOUR, LESION_COLOURS, heatmap, overlay_heatmap, overlay_lesions, thumbnail


def _scene():
    image = np.full((24, 24, 3), 90, np.uint8)
    lesions = {t: np.zeros((24, 24), bool) for t in LESION_COLOURS}
    lesions["hard_exudates"][4:9, 4:9] = True
    lesions["red_small_dots"][18, 18] = True
    detection = np.zeros((24, 24), bool)
    detection[6, 6] = True
    detection[12:16, 12:16] = True
    return image, lesions, detection


def test_lesion_colours_follow_the_seed():
    assert list(LESION_COLOURS) == ["hard_exudates", "soft_exudates", "hemorrhages", "red_small_dots"]
    green, blue, orange, red = LESION_COLOURS.values()
    assert green[1] > max(green[0], green[2])       # green
    assert blue[2] > max(blue[0], blue[1])          # blue
    assert orange[0] > orange[1] > orange[2]        # orange
    assert red[0] > 200 and red[1] == red[2] == 0   # red
    assert DETECTION_COLOUR not in LESION_COLOURS.values()


def test_overlay_keeps_lesions_and_detection_readable():
    image, lesions, detection = _scene()
    before = image.copy()
    out = overlay_lesions(image, lesions, detection)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)                                   # input untouched
    assert tuple(out[4, 4]) == LESION_COLOURS["hard_exudates"]             # lesion outline, full colour
    assert tuple(out[18, 18]) == LESION_COLOURS["red_small_dots"]          # a one-pixel lesion stays visible
    assert tuple(out[6, 6]) == DETECTION_COLOUR                            # detection inside a lesion is drawn on top
    assert tuple(out[12, 12]) == DETECTION_COLOUR                          # detection outline
    inner = out[13, 13].astype(int)                                        # detection interior: tinted, fundus visible
    assert inner[0] < 90 < inner[1] == inner[2] < 255
    assert tuple(out[0, 0]) == (90, 90, 90)                                # elsewhere unchanged
    interior = out[7, 7].astype(int)                                       # lesion interior: blended, not opaque
    assert interior[1] > 90 and interior[0] < 90


def test_overlay_without_detection_and_bad_inputs():
    image, lesions, detection = _scene()
    out = overlay_lesions(image, lesions)
    assert tuple(out[13, 13]) == (90, 90, 90)
    with pytest.raises(ValueError, match="detection"):
        overlay_lesions(image, lesions, detection[:-1])
    with pytest.raises(ValueError, match="unknown lesion"):
        overlay_lesions(image, {"drusen": detection})
    with pytest.raises(ValueError, match="image"):
        overlay_lesions(image.astype(np.float32), lesions)


def test_heatmap_thumbnail():
    importance = np.zeros((40, 20), np.float32)
    importance[10, 5] = 2.0
    heat = heatmap(importance)
    assert heat.shape == (40, 20, 3) and heat.dtype == np.uint8
    assert heat[10, 5].sum() > heat[0, 0].sum()
    assert heatmap(np.zeros((4, 4))).shape == (4, 4, 3)                    # an all-zero map does not divide by 0
    blended = overlay_heatmap(np.full((40, 20, 3), 50, np.uint8), importance)
    assert tuple(blended[0, 0]) == (50, 50, 50) and tuple(blended[10, 5]) != (50, 50, 50)
    small = thumbnail(heat, 10)
    assert small.shape == (10, 5, 3)
    assert thumbnail(heat, 100).shape == heat.shape
