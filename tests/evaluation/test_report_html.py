"""The clinician report: one static HTML file that renders in headless Chromium with its images."""
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from retina_fgvis.evaluation.compare import compare_runs
from retina_fgvis.evaluation.localization import RunFolderError, score_run
from retina_fgvis.evaluation.report import write_report
from retina_fgvis.viz import LESION_COLOURS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def scored(tmp_path, scene, fgvis_maps, blurry_maps, make_run):
    fgvis = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps, dataset=scene)
    cam = make_run(tmp_path / "gradcam", "gradcam", blurry_maps, dataset=scene)
    score_run(fgvis, scene)
    return fgvis, compare_runs([fgvis, cam], tmp_path / "cmp", scene)


#: Appended to a copy of the report: sorts by "RDR before" both ways and opens the first picture.
PROBE = """<script>window.addEventListener('load', function () { setTimeout(function () {
  var names = function () {
    var rows = document.querySelectorAll('#images tbody tr');
    return Array.prototype.map.call(rows, function (r) { return r.cells[0].textContent; }).join(',');
  };
  var th = document.querySelectorAll('#images th')[1];
  th.click(); document.body.setAttribute('data-probe-ascending', names());
  th.click(); document.body.setAttribute('data-probe-descending', names());
  document.querySelector('img.thumb').click();
  var box = document.getElementById('lightbox'), big = document.getElementById('lightbox-img');
  var open = box.classList.contains('open') && big.src.indexOf('data:image/png') === 0;
  document.body.setAttribute('data-probe-lightbox', open);
}, 0); });</script></body>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def test_report_is_one_self_contained_file(scored):
    run, comparison = scored
    html = write_report(run, comparison).read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)          # no CDN, no network
    assert "<link" not in html and "<script src" not in html
    thumbs = re.findall(r'<img class="thumb" src="data:image/png;base64,[^"]+" data-full="data:image/png;base64,', html)
    assert len(thumbs) == 2 * 2                                           # 2 images × (FGVis + Grad-CAM overlay)
    assert html.count('id="images"') == 1 and 'class="sortable"' in html and "lightbox" in html
    for colour in LESION_COLOURS.values():                                # the legend
        assert "rgb({},{},{})".format(*colour) in html
    assert "delete" in html and "optic disc" in html and "vessels" in html  # plain-language explanation + caveat
    assert "90.0 %" in html and "80.0 %" in html                          # RDR probability before, per image
    assert "1 / 2" in html                                                # image001: 1 of 2 hard exudates found
    assert "Grad-CAM" in html and "matched area" in html                  # the comparison


def test_report_links_images_when_not_embedded(scored):
    run, _ = scored
    html = write_report(run, embed=False).read_text(encoding="utf-8")
    assert 'src="images/image001/overlay_thumb.png"' in html and 'data-full="images/image001/overlay.png"' in html


def test_report_needs_a_scored_run(tmp_path, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    with pytest.raises(RunFolderError, match="score it first"):
        write_report(run)
    assert not (run / "report.html").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path, scored):
    run, comparison = scored
    report = write_report(run, comparison)
    probe = report.with_name("probe.html")                                 # same folder: same relative paths
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    dom = _chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attributes = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body))
    assert attributes["ready"] == "true"                                  # the inline JS ran after load
    assert attributes["images-total"] == attributes["images-loaded"] == "4"  # every <img> decoded (naturalWidth > 0)
    assert attributes["rows"] == "2" and "image001" in dom and "image002" in dom
    assert attributes["probe-ascending"] == "image002,image001"             # sortable: RDR before 0.8 < 0.9
    assert attributes["probe-descending"] == "image001,image002"
    assert attributes["probe-lightbox"] == "true"                           # click to enlarge

    shot = tmp_path / "report.png"
    _chromium(tmp_path / "profile", "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}",
              report.as_uri())
    pixels = cv2.imread(str(shot))
    assert pixels is not None and pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200   # not blank


def test_report_marks_failed_explanations_and_claims_no_drop(tmp_path, scene, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps, dataset=scene, failed=("image001",))
    score_run(run, scene)
    html = write_report(run).read_text(encoding="utf-8")
    assert "stop met on 1 of 2" in html and "It succeeded on 1 of 2 images" in html
    assert html.count("<tr class=failed-row>") == 1 and "no: not an explanation" in html
    assert "On all" not in html


def test_report_of_all_successful_run_says_so(scored):
    html = write_report(scored[0]).read_text(encoding="utf-8")
    assert "On all 2 images it succeeded" in html and "failed-row>" not in html


def test_report_shows_froc_figure_scores_and_interval_overlaps(scored):
    import base64

    run, comparison = scored
    html = write_report(run, comparison).read_text(encoding="utf-8")
    figure = re.search(r'<img id="froc-figure" src="data:image/png;base64,([^"]+)"', html)
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(figure.group(1)), np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None and pixels.shape[1] > 600 and pixels.std() > 10      # a drawn figure, 3 panels
    assert 'id="froc"' in html and "bootstrap intervals" in html and 'id="overlap"' in html
    assert "gradcam vs fgvis:" in html
    hard = comparison["froc"]["fgvis"]["relative"]["lesion_types"]["hard_exudates"]
    assert f"{100 * hard['roc_score']:.1f} % [{100 * hard['roc_score_ci'][0]:.1f}–" in html
    own = comparison["lesion_sensitivity_ci"]["fgvis"]["hard_exudates"]["own_threshold"]
    assert f"50.0 % [{100 * own[0]:.1f}–{100 * own[1]:.1f}]" in html


def test_report_reads_a_comparison_written_before_froc(scored):
    run, comparison = scored
    old = {key: value for key, value in comparison.items()
           if key not in ("froc", "lesion_sensitivity_ci", "intervals_overlap", "bootstrap", "roc_fp_rates")}
    html = write_report(run, old).read_text(encoding="utf-8")
    table = html.split('id="comparison"')[1].split("</table>")[0]
    assert 'id="froc"' not in html and "%" in table and " [" not in table              # no intervals to show


def test_the_caveat_names_the_lesion_types_this_run_has_few_of():
    from retina_fgvis.evaluation.report import _few_lesions

    sentence = _few_lesions({"hard_exudates": 41, "soft_exudates": 15, "hemorrhages": 40, "red_small_dots": 3})
    assert "soft exudates (15)" in sentence and "red small dots (3)" in sentence
    assert "hard exudates" not in sentence and "hemorrhages" not in sentence
    assert _few_lesions({"hard_exudates": 41, "hemorrhages": 20}) == ""
