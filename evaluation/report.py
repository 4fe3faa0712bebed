"""A static HTML report of a scored localization run, written for clinicians.

``write_report`` turns ``RUN/summary.json`` and ``RUN/per_image.csv`` (from
:func:`retina_fgvis.evaluation.localization.score_run`) and the run's overlays into ``RUN/report.html``: one file
with the images embedded as data URIs (or linked by relative path), inline CSS and a few lines of
inline JavaScript for sortable columns and click-to-enlarge. No server, no network.
"""
from __future__ import annotations

import base64
import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any, Mapping

import io

import cv2
import numpy as np
import pandas as pd

from retina_fgvis.evaluation.compare import OVERLAP_NAMES, overlap_lines, read_comparison
from retina_fgvis.evaluation.froc import SWEEPS
from retina_fgvis.evaluation.localization import percent, with_interval
from retina_fgvis.runs import RunFolder, RunFolderError, RunKind
from retina_fgvis._io import atomic_write_text
from retina_fgvis.localize import FULL_RESOLUTION_OVERLAY
from retina_fgvis.viz import DETECTION_COLOUR, LESION_COLOURS, LESION_NAMES, heatmap, thumbnail

THUMB_SIZE = 180
#: Display names of the methods ``retina_fgvis.localize`` writes.
METHOD_NAMES = {"fgvis": "FGVis", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "gradient": "Gradient",
                "smoothgrad": "SmoothGrad", "occlusion": "Occlusion", "random": "Random map"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:1.6em;margin:0 0 4px} h2{font-size:1.2em;margin:32px 0 8px}
.sub{color:#5a6473;margin:0 0 16px}
.box{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 18px;margin:12px 0}
.box p{margin:6px 0;line-height:1.45} .caveat{border-left:4px solid #e0a100}
.legend{display:flex;flex-wrap:wrap;gap:18px;align-items:center}
.swatch{display:inline-block;width:14px;height:14px;border-radius:3px;margin-right:6px;vertical-align:-2px}
.swatch.outline{background:transparent!important;border:2px solid}
table{border-collapse:collapse;background:#fff;font-size:0.92em}
th,td{border:1px solid #dde1e7;padding:5px 9px;text-align:right;vertical-align:middle}
th{background:#eef1f5} th.group{text-align:center}
td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none} table.sortable th:hover{background:#e1e6ee}
th[aria-sort=ascending]::after{content:" ▲"} th[aria-sort=descending]::after{content:" ▼"}
.muted{color:#98a1ad} .good{color:#0a7d32;font-weight:600} .failed{color:#b3261e;font-weight:600}
tr.failed-row td{background:#fdf0ef}
img.thumb{display:block;border-radius:4px;cursor:zoom-in;max-width:%(thumb)dpx;max-height:%(thumb)dpx}
figure{margin:0} figcaption{font-size:0.8em;color:#5a6473;text-align:center}
#lightbox{display:none;position:fixed;inset:0;background:rgba(10,14,20,.88);z-index:10;
  align-items:center;justify-content:center;flex-direction:column;cursor:zoom-out}
#lightbox.open{display:flex} #lightbox img{max-width:94vw;max-height:88vh;image-rendering:auto;border-radius:4px}
#lightbox p{color:#eee;margin:10px 0 0}
"""

_JS = """
(function(){
  function key(cell){var v=cell.getAttribute('data-sort');
    if(v===null){return cell.textContent.trim().toLowerCase();} var n=parseFloat(v); return isNaN(n)?v:n;}
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th,col){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
          if(typeof x!==typeof y){x=String(x);y=String(y);} return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var box=document.getElementById('lightbox'), big=document.getElementById('lightbox-img'),
      caption=document.getElementById('lightbox-caption');
  document.querySelectorAll('img.thumb').forEach(function(img){
    if(img.closest('a')){return;}  // linked to its full-resolution overlay: the browser opens that
    img.addEventListener('click',function(){big.src=img.getAttribute('data-full');
      caption.textContent=img.getAttribute('alt'); box.classList.add('open');});
  });
  box.addEventListener('click',function(){box.classList.remove('open');});
  document.addEventListener('keydown',function(e){if(e.key==='Escape'){box.classList.remove('open');}});
  window.addEventListener('load',function(){
    var imgs=document.querySelectorAll('img.thumb'), ok=0;
    imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++;}});
    document.body.setAttribute('data-images-total',imgs.length);
    document.body.setAttribute('data-images-loaded',ok);
    document.body.setAttribute('data-rows',document.querySelectorAll('#images tbody tr').length);
    document.body.setAttribute('data-ready','true');
  });
})();
"""


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*colour)


def _png_uri(image: np.ndarray) -> str:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise ValueError("could not encode an image as PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def _file_src(path: Path, embed: bool, base: Path) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return Path(os.path.relpath(path, base)).as_posix()


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RunFolderError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _pictures(run_dir: Path, image_id: str, embed: bool, base: Path) -> tuple[str, str] | None:
    """(thumbnail src, full-size src) of one image's overlay; the importance heat map if there is no
    overlay; ``None`` when the run has neither for this image."""
    run = RunFolder(run_dir, RunKind.LOCALIZE, name="run")
    folder = run.item_dir(image_id)
    overlay, thumb = folder / "overlay.png", folder / "overlay_thumb.png"
    if overlay.is_file():
        full_src = _file_src(overlay, embed, base)
        thumb_src = _file_src(thumb, embed, base) if thumb.is_file() else _png_uri(
            thumbnail(_read_rgb(overlay), THUMB_SIZE))
        return thumb_src, full_src
    if (folder / "maps.npz").is_file():
        heat = heatmap(run.read_map(image_id, "importance").astype(np.float32))
        return _png_uri(thumbnail(heat, THUMB_SIZE)), _png_uri(heat)
    return None


def _run_config(run: Path) -> dict[str, Any]:
    """The run's recorded config, ``{}`` when run.json is missing or unreadable (the report only decorates with it)."""
    try:
        info = RunFolder(run, RunKind.LOCALIZE, name="run").read_info()
    except RunFolderError:
        return {}
    return {} if info is None else dict(info.config)


def _load_comparison(comparison: Mapping[str, Any] | str | os.PathLike | None) -> Mapping[str, Any] | None:
    if comparison is None:
        return None
    if isinstance(comparison, Mapping):
        return read_comparison(dict(comparison))
    path = Path(comparison)
    if path.is_dir():
        path = path / "comparison.json"
    try:
        return read_comparison(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ValueError(f"comparison: cannot read {path} ({error})") from None


def _cell(value: float | None, text: str | None = None, css: str = "") -> str:
    """A sortable cell: sorted by ``value`` (missing = −1, shown as "–"), shown as ``text`` or a percentage."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    sort = -1 if missing else value
    shown = "–" if missing else (text if text is not None else percent(value))
    css = "muted" if missing else css
    return f'<td data-sort="{sort}"{f" class={css}" if css else ""}>{escape(shown)}</td>'


def _summary_html(summary: Mapping[str, Any]) -> str:
    success = summary.get("success")
    head = ("Lesion type", "Lesions", "Found", "Lesion sensitivity", "Chance (rotated)",
            *(("Sensitivity, stop met", "Chance, stop met") if success else ()),
            "Pixel sensitivity", "Pixel precision", "Images detected")
    rows = []
    for lesion_type in summary["lesion_sensitivity"]:
        met = "".join(_cell(success["successful"][key][lesion_type])
                      for key in ("lesion_sensitivity", "chance_lesion_sensitivity")) if success else ""
        sens, chance = summary["lesion_sensitivity"][lesion_type], summary["chance"]["lesion_sensitivity"][lesion_type]
        better = sens is not None and chance is not None and sens > chance
        # Intervals: absent in summaries written before the bootstrap.
        sens_ci = summary.get("lesion_sensitivity_ci", {}).get(lesion_type)
        chance_ci = summary["chance"].get("lesion_sensitivity_ci", {}).get(lesion_type)
        sens_text = percent(sens) + with_interval(sens_ci) if sens is not None else None
        chance_text = percent(chance) + with_interval(chance_ci) if chance is not None else None
        rows.append(
            f'<tr><td><span class="swatch" style="background:{_rgb(LESION_COLOURS[lesion_type])}"></span>'
            f"{escape(LESION_NAMES[lesion_type])}</td>"
            f"<td>{summary['n_lesions'][lesion_type]}</td><td>{summary['n_hit'][lesion_type]}</td>"
            + _cell(sens, sens_text, css="good" if better else "")
            + _cell(chance, chance_text) + met + _cell(summary["pixel_sensitivity"][lesion_type])
            + _cell(summary["pixel_precision"][lesion_type]) + _cell(summary["image_detection"][lesion_type])
            + "</tr>"
        )
    return _table("summary", head, rows)


def _comparison_html(comparison: Mapping[str, Any]) -> str:
    labels = list(comparison["lesion_sensitivity"])
    settings = (("own_threshold", "own threshold"), ("matched_area", "matched area"), ("chance", "chance"))
    top = "".join(f'<th colspan="{len(settings)}" class="group">{escape(_display(label))}</th>' for label in labels)
    sub = "".join(f"<th>{escape(name)}</th>" for _ in labels for _, name in settings)
    intervals = comparison.get("lesion_sensitivity_ci", {})  # absent in comparisons written before the bootstrap

    def cell(label: str, lesion_type: str, key: str) -> str:
        value = comparison["lesion_sensitivity"][label][lesion_type][key]
        interval = intervals.get(label, {}).get(lesion_type, {}).get(key) if key != "chance" else None
        shown = percent(value) + with_interval(interval) if value is not None else None
        return _cell(value, shown)

    rows = []
    for lesion_type in comparison["lesion_types"]:
        cells = "".join(cell(label, lesion_type, key) for label in labels for key, _ in settings)
        rows.append(f"<tr><td>{escape(LESION_NAMES.get(lesion_type, lesion_type))}</td>{cells}</tr>")
    area = "".join(_cell(e["area_fraction"]) + _cell(e["matched_area_fraction"]) + "<td></td>"
                   for e in comparison["runs"])
    rows.append(f"<tr class=muted><td>Share of the retina marked</td>{area}</tr>")
    return (f'<table id="comparison"><thead><tr><th rowspan="2">Lesion type</th>{top}</tr><tr>{sub}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _froc_figure(comparison: Mapping[str, Any]) -> str:
    """The FROC curves, one panel per lesion type with lesions, as a PNG data URI (matplotlib's Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    froc = comparison["froc"]
    types = [t for t in comparison["lesion_types"]
             if any(froc[label][sweep]["lesion_types"][t]["roc_score"] is not None for label in froc for sweep in SWEEPS)]
    figure = Figure(figsize=(3.4 * max(len(types), 1), 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(len(types), 1), squeeze=False)[0]
    styles = {"relative": "-", "area": "--"}
    for axis, lesion_type in zip(axes, types):
        for index, label in enumerate(froc):
            for sweep, style in styles.items():
                curve = froc[label][sweep]
                # In sweep order, strict to loose: the false-positive count can fall as regions merge.
                points = [(fp, sens) for fp, sens in zip(curve["fp_per_image"],
                                                          curve["lesion_types"][lesion_type]["sensitivity"])
                          if fp is not None and sens is not None]
                if points:
                    fp, sens = zip(*points)
                    # A point with no false positive is drawn at the left edge of the log axis.
                    axis.plot(np.maximum(fp, 1 / 16), sens, style, marker=".", color=f"C{index}",
                              label=_display(label) if sweep == "relative" else None)
        for rate in comparison["roc_fp_rates"]:
            axis.axvline(rate, color="0.85", linewidth=0.6, zorder=0)
        axis.set(xscale="log", xlim=(1 / 16, 64), ylim=(0, 1.02), title=LESION_NAMES.get(lesion_type, lesion_type),
                 xlabel="false-positive regions per image")
        axis.set_xticks(comparison["roc_fp_rates"], ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    axes[0].set_ylabel("lesion sensitivity")
    if types:
        handles, names = axes[0].get_legend_handles_labels()  # one entry per method
        figure.legend(handles, names, loc="outside right upper", fontsize=7, title="solid: relative\ndashed: area",
                      title_fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _froc_html(comparison: Mapping[str, Any]) -> str:
    """The FROC section: the figure, the ROC scores with their intervals and where intervals overlap."""
    boot = comparison["bootstrap"]
    labels = list(comparison["froc"])
    top = "".join(f'<th colspan="{len(SWEEPS)}" class="group">{escape(_display(label))}</th>' for label in labels)
    sub = "".join(f"<th>{escape(sweep)}</th>" for _ in labels for sweep in SWEEPS)
    rows = []
    for lesion_type in comparison["lesion_types"]:
        cells = []
        for label in labels:
            for sweep in SWEEPS:
                entry = comparison["froc"][label][sweep]["lesion_types"][lesion_type]
                value = entry["roc_score"]
                cells.append(_cell(value, percent(value) + with_interval(entry["roc_score_ci"])
                                   if value is not None else None))
        rows.append(f"<tr><td>{escape(LESION_NAMES.get(lesion_type, lesion_type))}</td>{''.join(cells)}</tr>")
    overlaps = "".join(f"<li>{escape(line)}</li>" for line in overlap_lines(dict(comparison)))
    return (
        f'<figure><img id="froc-figure" src="{_froc_figure(comparison)}" alt="FROC curves per lesion type" '
        'style="max-width:100%"></figure>'
        f'<p class="sub">Each curve sweeps the binarization from strict to loose: solid, a threshold relative to '
        "the map's maximum; dashed, a fixed share of the retina. The ROC score is the mean lesion sensitivity at "
        f"{', '.join(f'{r:g}' for r in comparison['roc_fp_rates'])} false-positive regions per image (grey lines), "
        "read off the curve by linear interpolation.</p>"
        f'<table id="froc"><thead><tr><th rowspan="2">Lesion type</th>{top}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="sub">In brackets: {boot["level"]:.0%} bootstrap intervals (images resampled '
        f'{boot["n_resamples"]} times, seed {boot["seed"]}). Where the intervals of two methods overlap, these '
        f"images do not show a difference ({', '.join(OVERLAP_NAMES.values())}):</p><ul id=\"overlap\">{overlaps}</ul>"
    )


def _display(method: str) -> str:
    """Display name of a method label ("gradcam (run2)" -> "Grad-CAM (run2)")."""
    name, _, rest = method.partition(" ")
    return METHOD_NAMES.get(name.lower(), name) + (f" {rest}" if rest else "")


def _table(table_id: str, head, rows: list[str]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (f'<table id="{table_id}" class="sortable"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _image_rows(run_dir: Path, frame: pd.DataFrame, lesion_types: list[str], others: list[tuple[str, Path]],
                embed: bool) -> tuple[list[str], list[str]]:
    judged = "success" in frame and frame["success"].notna().any()
    head = ["Image", "RDR before", "RDR after", "Iterations"] + (["Stop met"] if judged else [])
    head += ["Retina marked", "False-positive regions"]
    head += [LESION_NAMES.get(t, t) for t in lesion_types]
    head += ["Overlay"] + [f"{_display(label)} overlay" for label, _ in others]
    rows = []
    for image_id, group in frame.groupby("image_id", sort=True):
        by_type = group.set_index("lesion_type")
        first = group.iloc[0]
        cells = [f"<td>{escape(str(image_id))}</td>", _cell(first["prob_before"]), _cell(first["prob_after"]),
                 _cell(first["iterations"], f"{first['iterations']:.0f}" if pd.notna(first["iterations"]) else None)]
        failed = judged and pd.notna(first["success"]) and not bool(first["success"])
        if judged:
            met = first["success"]
            cells.append(_cell(None) if pd.isna(met) else
                         _cell(float(bool(met)), "yes" if met else "no: not an explanation", "" if met else "failed"))
        cells += [_cell(first["area_fraction"]), _cell(float(first["fp_components"]), f"{first['fp_components']:.0f}")]
        for lesion_type in lesion_types:
            row = by_type.loc[lesion_type] if lesion_type in by_type.index else None
            if row is None or int(row["n_lesions"]) == 0:
                cells.append(_cell(None))
            else:
                cells.append(_cell(float(row["lesion_sensitivity"]), f"{int(row['n_hit'])} / {int(row['n_lesions'])}"))
        for label, folder in [("", run_dir)] + others:
            pictures = _pictures(folder, str(image_id), embed, run_dir)
            if pictures is None:
                cells.append("<td class=muted>–</td>")
                continue
            alt = escape(f"{image_id} {label}".strip())
            picture = f'<img class="thumb" src="{pictures[0]}" data-full="{pictures[1]}" alt="{alt}" loading="eager">'
            # The photograph-size overlay is linked, never embedded: several MB each, and browsers do not open data URIs.
            full_resolution = RunFolder(folder, RunKind.LOCALIZE).item_dir(str(image_id)) / FULL_RESOLUTION_OVERLAY
            if full_resolution.is_file():
                href = escape(Path(os.path.relpath(full_resolution, run_dir)).as_posix())
                picture = f'<a href="{href}" target="_blank" title="full resolution">{picture}</a>'
            cells.append(f"<td><figure>{picture}</figure></td>")
        rows.append(("<tr class=failed-row>" if failed else "<tr>") + "".join(cells) + "</tr>")
    return head, rows


#: Below this many lesions of a type, the report says its scores rest on few lesions.
FEW_LESIONS = 20


def _few_lesions(n_lesions: Mapping[str, Any]) -> str:
    """The caveat's sentence on the lesion types with fewer than :data:`FEW_LESIONS` lesions in this run."""
    few = [f"{LESION_NAMES.get(t, t).lower()} ({int(n)})" for t, n in n_lesions.items() if int(n) < FEW_LESIONS]
    if not few:
        return ""
    return (f" Few lesions of some types are marked in these images ({', '.join(few)}), so their scores rest on "
            "few lesions.")


def _explanation(method: str, threshold: Any, stop_score: Any, success: Mapping[str, Any] | None,
                 n_lesions: Mapping[str, Any]) -> str:
    share = percent(threshold) if isinstance(threshold, (int, float)) else "a fixed share"
    target = f"below {percent(stop_score)}" if isinstance(stop_score, (int, float)) else "to a low value"
    if method.lower().startswith("fgvis"):
        n_met = success["n_success"] if success else 0
        n_all = n_met + (success["n_failed"] if success else 0)
        if success and success["n_failed"] == 0:
            outcome = (f"On all {n_all} images it succeeded: deleting the pixels dropped the probability "
                       f"{escape(target)}.")
        else:
            outcome = (f"It succeeded on {n_met} of {n_all} images. On the others (rows marked "
                       "<i>not an explanation</i>) the probability stayed at or above the stop value: their "
                       "highlights are where the search ended, not evidence the model needed.")
        what = ("<p><b>What the highlighted (cyan) pixels mean.</b> The screening model gives each photograph a "
                "probability of referable diabetic retinopathy (RDR). FGVis searched for the pixels the model "
                "needs to <i>delete</i> (replace by a neutral colour) to drop that RDR probability "
                f"{escape(target)}, changing as little of the image as it could. {outcome} The cyan regions are "
                f"the deleted pixels (deleted by at least {share} of the strongest deletion): on a successful "
                "image, the evidence the model relied on, at pixel resolution.</p>")
    else:
        what = ("<p><b>What the highlighted (cyan) pixels mean.</b> The regions that the "
                f"{escape(_display(method))} map "
                f"rates most important for the model's RDR score (importance at least {share} of the image's "
                "maximum).</p>")
    return (
        f'<div class="box">{what}'
        "<p>They explain the model, they do not diagnose: a highlighted pixel is not necessarily a lesion, and a "
        "lesion left unhighlighted may simply not have been needed once other lesions were removed.</p>"
        "<p><b>Reading the numbers.</b> <i>Lesion sensitivity</i> is the share of the experts' lesions (coloured) "
        "touched by at least one highlighted pixel. <i>Chance</i> is the same score after rotating the highlights "
        "by a random angle about the image centre: scattered highlights touch large lesions by luck, and only "
        "sensitivity clearly above chance shows the model found the lesions. <i>Pixel precision</i> is the share "
        "of highlighted pixels lying on lesions of that type.</p></div>"
        '<div class="box caveat"><p><b>Caveat.</b> Highlights also fall on blood vessels, the optic disc and the '
        f"edge of the retina, where contrast resembles lesions; they are counted as false-positive regions."
        f"{escape(_few_lesions(n_lesions))}</p></div>"
    )


def _legend() -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{_rgb(colour)}"></span>'
        f"{escape(LESION_NAMES[t])} (experts)</span>"
        for t, colour in LESION_COLOURS.items()
    )
    detection = (f'<span><span class="swatch outline" style="border-color:{_rgb(DETECTION_COLOUR)};'
                 f'background:{_rgb(DETECTION_COLOUR)}"></span>'
                 "Highlighted by the method (outlined, lightly tinted)</span>")
    return f'<div class="box legend">{items}{detection}</div>'


def write_report(run_dir: str | os.PathLike, comparison: Mapping[str, Any] | str | os.PathLike | None = None,
                 *, embed: bool = True) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path.

    Args:
        run_dir: a run folder already scored by :func:`retina_fgvis.evaluation.localization.score_run`.
        comparison: the dict returned by :func:`retina_fgvis.evaluation.compare.compare_runs`, or the path of a
            ``comparison.json`` (or of its folder); adds the side-by-side table and the other runs' overlays.
        embed: embed the images as base64 data URIs (one self-contained file, the default); ``False``
            links the run's PNGs by relative path instead (smaller file, the folder must travel with it).
    """
    run = Path(run_dir)
    summary_path, table_path = run / "summary.json", run / "per_image.csv"
    if not summary_path.is_file() or not table_path.is_file():
        raise RunFolderError(f"run folder {run}: no summary.json/per_image.csv; score it first "
                             "(retina-fgvis evaluate score)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    frame = pd.read_csv(table_path)
    comparison = _load_comparison(comparison)
    others = []
    if comparison is not None:
        others = [(e["label"], Path(e["run"])) for e in comparison["runs"]
                  if Path(e["run"]).resolve() != run.resolve() and Path(e["run"]).is_dir()]
    lesion_types = list(summary["lesion_sensitivity"])
    head, rows = _image_rows(run, frame, lesion_types, others, embed)
    before, after = summary.get("rdr_probability", {}).get("before"), summary.get("rdr_probability", {}).get("after")
    success = summary.get("success")
    met = f" · stop met on {success['n_success']} of {success['n_success'] + success['n_failed']}" if success else ""
    facts = (f"{summary['n_images']} images{met} · {percent(summary['area_fraction'])} of the retina highlighted on "
             f"average · {summary['fp_components_per_image']:.1f} false-positive regions per image · mean RDR "
             f"probability {percent(before)} before, {percent(after)} after deleting the highlights")
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Lesion localization report: {escape(_display(summary['method']))}</title>",
        f"<style>{_CSS % {'thumb': THUMB_SIZE}}</style></head><body><main>",
        f"<h1>Where the model looks: {escape(_display(summary['method']))} vs the experts' lesion markings</h1>",
        f'<p class="sub">{escape(facts)}</p>',
        _explanation(summary["method"], summary.get("threshold"), _run_config(run).get("stop_score"),
                     summary.get("success"), summary["n_lesions"]),
        "<h2>Legend</h2>", _legend(),
        "<h2>Lesions found, per type</h2>", _summary_html(summary),
    ]
    if comparison is not None:
        parts += [
            "<h2>Methods side by side (lesion sensitivity)</h2>",
            f'<p class="sub">"Matched area": every method marks the same share of the retina as '
            f"{escape(_display(comparison['reference']['method']))}, image by image, so they are compared fairly. "
            "Chance: the method's own highlights rotated by a random angle."
            + (" In brackets: 95 % bootstrap intervals over images." if "lesion_sensitivity_ci" in comparison else "")
            + "</p>",
            _comparison_html(comparison),
        ]
        if "froc" in comparison:  # comparisons written before FROC have none
            parts += ["<h2>FROC: sensitivity against false positives</h2>", _froc_html(comparison)]
    parts += [
        "<h2>Images</h2>",
        '<p class="sub">Click a column heading to sort, a picture to enlarge. Found / lesions per type.</p>',
        _table("images", head, rows),
        '</main><div id="lightbox" role="dialog"><img id="lightbox-img" alt=""><p id="lightbox-caption"></p></div>',
        f"<script>{_JS}</script></body></html>",
    ]
    return atomic_write_text(run / "report.html", "\n".join(parts))
