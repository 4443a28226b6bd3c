"""The walkthrough notebook and the figures: it runs on the reference, stops on the stubs naming the function
to write, is committed without outputs, and every figure is readable (labels, titles, legend, >= 120 dpi)."""
from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.figure
import nbformat
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image

from grader.solution import REPO_ROOT, export, project_files
from hw2 import analysis
from hw2 import pruning as stubs
from hw2.data import make_loaders, make_synthetic
from hw2.models import VGG13
from hw2.train import fit
from tests.test_readme import readme_commands

NOTEBOOK = Path("hw2") / "walkthrough.ipynb"
TIME_LIMIT_S = 180  # the budget for the whole quick notebook on a 2-CPU machine
MIN_DPI = 120
SMALL_WIDTHS = [8, 8, 16, 16, 32, 32, 64, 64, 64, 64]  # VGG13 layer names, 8x narrower
# the quick synthetic setting; the quick model is tiny: threads only contend on 2 shared CPUs
QUICK_ENV = {"HW2_WALKTHROUGH_QUICK": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}


def execute_notebook(project: Path, monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    """Run ``project``'s walkthrough top to bottom in the quick synthetic setting; return it and the seconds taken."""
    from nbclient import NotebookClient

    for name, value in QUICK_ENV.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(project / NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=TIME_LIMIT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(project / "hw2")}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
    return notebook, seconds


def png_dpi(path: Path) -> float:
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is not a PNG"
        return min(image.info["dpi"])


# ---------------------------------------------------------------------------------------------
# The notebook as committed
# ---------------------------------------------------------------------------------------------
def committed_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.read(REPO_ROOT / NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_notebook_is_committed_without_outputs():
    code_cells = [cell for cell in committed_notebook().cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, f"clear the outputs of: {cell.source[:60]!r}"


def test_notebook_holds_no_graded_code_and_imports_hw2_with_autoreload():
    source = "\n".join(cell.source for cell in committed_notebook().cells if cell.cell_type == "code")
    graded = [name for name, obj in inspect.getmembers(stubs, inspect.isfunction)
              if obj.__module__ == stubs.__name__ and not name.startswith("_")]
    assert "unstructured_prune" in graded and "plot_mask" in graded
    for name in graded:
        assert f"def {name}(" not in source, f"the notebook defines {name}; it belongs in hw2/pruning.py"
    assert "%autoreload 2" in source and "from hw2 import analysis, pruning" in source


def test_notebook_follows_the_order_of_work():
    source = "\n".join(cell.source for cell in committed_notebook().cells if cell.cell_type == "code")
    steps = ["describe_layers(", "plot_weight_histograms(", "sensitivity_scan(", "plot_sensitivity(",
             "read_prune_ratios_from_yaml(", "unstructured_prune(", "filter_prune(", "apply_pruning(",
             "test_sparsity(", "masked_retrain(", "oneshot_magnitude_prune(", "iterative_magnitude_prune(",
             "plot_mask(", "plot_sparsity_vs_accuracy(", "prune_channels_after_filter_prune(", "report_model("]
    positions = [source.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions) if p < 0]
    assert positions == sorted(positions), "the sections are out of the walkthrough's order"


def test_notebook_has_one_parameters_cell_reading_the_quick_switch():
    tagged = [cell for cell in committed_notebook().cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "HW2_WALKTHROUGH_QUICK" in tagged[0].source


# ---------------------------------------------------------------------------------------------
# Executed: reference and stubs
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_the_reference_within_the_time_limit(tmp_path):
    """README's headless command (with this Python's jupyter), on the reference in the quick synthetic setting."""
    command = next(c for c in readme_commands() if c.startswith("jupyter nbconvert")).split()
    project = export(tmp_path / "reference", REPO_ROOT)
    env = {**os.environ, **QUICK_ENV}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", *command], cwd=project, capture_output=True, text=True,
                         timeout=3 * TIME_LIMIT_S, env=env)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-3000:]
    figures = project / "results" / "walkthrough"
    notebook = nbformat.read(figures / "walkthrough.ipynb", as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    assert not [o for cell in code_cells for o in cell.outputs if o.output_type == "error"]
    assert seconds < TIME_LIMIT_S, f"the quick walkthrough took {seconds:.0f} s (budget {TIME_LIMIT_S} s)"
    expected = {"weight_histograms_dense.png", "sensitivity_unstructured.png", "sensitivity_filter.png",
                "mask_dense.png", "mask_Omp_unstructured.png", "mask_Omp_filter.png", "sparsity_vs_accuracy.png"}
    assert expected <= {p.name for p in figures.glob("*.png")}
    for name in expected:
        assert png_dpi(figures / name) >= MIN_DPI - 0.5, name  # PNG stores dots per metre: 150 dpi reads 149.99
    shown = sum(1 for cell in code_cells for o in cell.outputs if "image/png" in o.get("data", {}))
    assert shown >= len(expected), "each figure is displayed in the notebook"


@pytest.mark.slow
def test_on_the_stubs_the_first_student_cell_stops_naming_the_function(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    project = tmp_path / "student"
    for rel in project_files(REPO_ROOT):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, project / rel)
    with pytest.raises(CellExecutionError) as failure:
        execute_notebook(project, monkeypatch)
    assert failure.value.ename == "NotImplementedError"
    assert "unstructured_prune: write it in hw2/pruning.py" in failure.value.evalue
    notebook = nbformat.read(project / NOTEBOOK, as_version=4)  # re-read: the executed copy is the client's
    first_student_cell = next(i for i, cell in enumerate(notebook.cells)
                              if cell.cell_type == "code" and ("pruning." in cell.source or "sensitivity_scan(" in cell.source))
    assert "sensitivity_scan(" in notebook.cells[first_student_cell].source


# ---------------------------------------------------------------------------------------------
# Figures: analysis (provided) and the reference plotting functions
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def captured_figures(monkeypatch):
    """Every matplotlib figure saved during the test, kept for inspection (the functions close them)."""
    saved = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        saved.append((fig, kwargs.get("dpi")))
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


@pytest.fixture(scope="module")
def trained_small_vgg():
    torch.manual_seed(0)
    data = make_synthetic(num_train=96, num_test=60, seed=0)
    train_loader, test_loader = make_loaders(data, 32, "cpu", seed=0)
    model = VGG13(widths=SMALL_WIDTHS)
    fit(model, train_loader, test_loader, 2, 0.05, "cpu", progress=False)
    return model.eval(), test_loader


def titles_of(fig) -> str:
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return " ".join([suptitle] + [ax.get_title() for ax in fig.axes])


def assert_axes_labelled(ax, x_unit: str, y_unit: str):
    assert x_unit in ax.get_xlabel(), f"x label {ax.get_xlabel()!r} lacks the unit {x_unit!r}"
    assert y_unit in ax.get_ylabel(), f"y label {ax.get_ylabel()!r} lacks the unit {y_unit!r}"


def test_weight_histograms_one_labelled_panel_per_conv(tmp_path, captured_figures, trained_small_vgg):
    model, _ = trained_small_vgg
    out = tmp_path / "hist.png"
    counts = analysis.plot_weight_histograms(model, out, "VGG13 dense", ratios={"features.0.weight": 0.5})
    conv_names = [n for n, p in model.named_parameters() if p.dim() == 4]
    assert list(counts) == conv_names
    for name, weight in ((n, p) for n, p in model.named_parameters() if p.dim() == 4):
        assert counts[name].sum() == int((weight != 0).sum()), f"{name}: every nonzero weight is in a bin"
    (fig, dpi), = captured_figures
    assert dpi >= MIN_DPI and png_dpi(out) >= MIN_DPI - 0.5
    title = titles_of(fig)
    assert "VGG13" in title and "dense" in title and "sparsity 0.00" in title
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert len(panels) == len(conv_names)
    for ax in panels:
        assert_axes_labelled(ax, "|weight|", "count")
    assert panels[0].get_legend() is not None, "the cut line is named in a legend"


def test_histograms_report_the_sparsity_of_a_pruned_model(tmp_path, captured_figures, trained_small_vgg):
    model, _ = trained_small_vgg
    pruned = VGG13(widths=SMALL_WIDTHS)
    pruned.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in pruned.parameters():
            if p.dim() > 1:
                p[p.abs() < p.abs().flatten().median()] = 0  # about half of every weight
    analysis.plot_weight_histograms(pruned, tmp_path / "hist.png", "VGG13 test")
    (fig, _), = captured_figures
    assert f"sparsity {analysis.overall_sparsity(pruned):.2f}" in titles_of(fig)
    assert 0.45 < analysis.overall_sparsity(pruned) < 0.55


@pytest.mark.parametrize("kind", ["unstructured", "filter"])
def test_sensitivity_scan_prunes_one_layer_at_a_time_and_restores_it(ref, monkeypatch, trained_small_vgg, kind):
    monkeypatch.setattr(analysis, "pruning", ref)  # the scan calls the student's functions: use the reference
    model, test_loader = trained_small_vgg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = ["features.0.weight", "features.31.weight"]
    scan = analysis.sensitivity_scan(model, test_loader, "cpu", kind, ratios=(0.0, 0.5, 0.99), layers=layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model is restored"
    assert list(scan.accuracy) == layers and all(len(a) == 3 for a in scan.accuracy.values())
    assert all(a[0] == scan.dense_accuracy for a in scan.accuracy.values()), "ratio 0 prunes nothing"
    assert all(0.0 <= x <= 100.0 for a in scan.accuracy.values() for x in a)
    assert scan.max_ratio_within(100.0) == {name: 0.99 for name in layers}


def test_sensitivity_scan_rejects_bad_input(ref, monkeypatch, trained_small_vgg):
    monkeypatch.setattr(analysis, "pruning", ref)
    model, test_loader = trained_small_vgg
    with pytest.raises(ValueError, match="valid: features.0.weight"):
        analysis.sensitivity_scan(model, test_loader, "cpu", "unstructured", layers=["features.99.weight"])
    with pytest.raises(ValueError, match="unstructured, filter"):
        analysis.sensitivity_scan(model, test_loader, "cpu", "channel")


def test_sensitivity_figure_one_line_per_layer_and_the_dense_reference(tmp_path, captured_figures):
    scan = analysis.SensitivityScan("filter", (0.1, 0.5, 0.9), 92.5,
                                    {"features.0.weight": [92.0, 80.0, 30.0], "features.3.weight": [92.5, 91.0, 85.0]})
    out = tmp_path / "sensitivity.png"
    drawn = analysis.plot_sensitivity(scan, out)
    assert drawn == scan.accuracy
    (fig, dpi), = captured_figures
    assert dpi >= MIN_DPI and png_dpi(out) >= MIN_DPI - 0.5
    ax = fig.axes[0]
    title = titles_of(fig)
    assert "VGG13" in title and "filter" in title and "0.1 to 0.9" in title and "no retraining" in title
    assert_axes_labelled(ax, "(%", "(%)")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["features.0.weight", "features.3.weight", "dense (92.50%)"]


def test_comparison_figure_shows_four_models_and_the_dense_line(ref, tmp_path, captured_figures):
    records = [{"label": label, "sparsity": s, "accuracy": a} for label, s, a in
               [("Omp_unstructured", 0.80, 91.0), ("Imp_unstructured", 0.80, 91.0),
                ("Omp_filter", 0.40, 90.0), ("Imp_filter", 0.40, 90.5)]]
    out = tmp_path / "comparison.png"
    title = "VGG13 on cifar10: OMP vs IMP, unstructured (target sparsity 0.80) vs filter (target 0.40)"
    ref.plot_sparsity_vs_accuracy(records, out, dense_accuracy=92.0, title=title)
    (fig, dpi), = captured_figures
    assert dpi >= MIN_DPI and png_dpi(out) >= MIN_DPI - 0.5
    ax = fig.axes[0]
    assert ax.get_title() == title
    assert_axes_labelled(ax, "(%)", "(%)")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for r in records:
        assert any(label.startswith(r["label"]) for label in labels), r["label"]
    assert "dense (92.00%)" in labels
    dense_lines = [line for line in ax.get_lines() if set(line.get_ydata()) == {92.0}]
    assert dense_lines, "the dense accuracy is drawn as a horizontal line"
    # OMP and IMP at the same point must both stay visible: IMP hollow (no face colour)
    faces = {label: coll.get_facecolors() for label, coll in zip(labels, ax.collections)}
    imp_faces = [f for label, f in faces.items() if label.startswith("Imp")]
    assert imp_faces and all(len(f) == 0 or np.allclose(f[:, 3], 0) for f in imp_faces)


def test_mask_figure_two_colour_blind_safe_colours_and_a_full_title(ref, tmp_path, captured_figures):
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3) * ref.filter_prune(torch.randn(16, 8, 3, 3), 0.5)
    out = tmp_path / "mask.png"
    title = "VGG13 Omp_filter (0.40 sparsity): features.7.weight"
    image = ref.plot_mask(weight, out, title=title)
    assert image.shape == (16, 72)
    (fig, dpi), = captured_figures
    assert dpi >= MIN_DPI and png_dpi(out) >= MIN_DPI - 0.5
    ax = fig.axes[0]
    assert ax.get_title().startswith(title) and "kept" in ax.get_title() and "pruned" in ax.get_title()
    assert_axes_labelled(ax, "C_in x kH x kW", "C_out")
    colours = [to_hex(c) for c in ax.images[0].cmap(np.array([0.0, 1.0]))]
    assert len(set(colours)) == 2 and set(colours) <= OKABE_ITO, colours
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["kept", "pruned"]
    with Image.open(out) as png:  # both colours really are in the picture
        pixels = {"#%02x%02x%02x" % tuple(px) for px in np.asarray(png.convert("RGB")).reshape(-1, 3)}
    assert set(colours) <= pixels
