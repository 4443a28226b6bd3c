"""Every command README.md shows is run by a test or by .ci/run: a new command needs a new entry here."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import nbformat
import pytest

from grader.solution import REPO_ROOT
from tests.test_solution_export import grade_release, graded_tests, release_with_reference

README = REPO_ROOT / "README.md"
CI = REPO_ROOT / ".ci" / "run"

# README command (prefix, after collapsing spaces) -> where it runs: ".ci/run" or "tests/FILE.py::TEST".
COVERAGE = [
    ("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && python -m pytest", ".ci/run"),
    ("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt", ".ci/run"),
    ("jupyter nbconvert --to notebook --execute hw2/walkthrough.ipynb", "tests/test_walkthrough.py::test_notebook_runs_top_to_bottom_on_the_reference_within_the_time_limit"),
    ("bash run_reference.sh", ".ci/run"),
    ("cd hw2", "shell"),
    ("python main.py --method imp --type filter", "tests/test_main_cli.py::test_runs_from_inside_hw2_too_and_replaces_its_older_model_file"),
    ("python main.py --method all", "tests/test_main_cli.py::test_method_all_writes_four_named_models_figures_and_a_log"),
    ("python main.py --plot-only", "tests/test_main_checks.py::test_a_plotting_stub_costs_its_figure_only_and_plot_only_draws_it_later"),
    ("python hw2/main.py --method all --dataset synthetic", "tests/test_main_cli.py::test_method_all_writes_four_named_models_figures_and_a_log"),
    ("pytest grader/ --public", "tests/test_readme.py::test_student_self_check_grades_a_synthetic_run"),
    ("pytest grader/ --dataset", "tests/test_readme.py::test_student_self_check_grades_a_synthetic_run"),
    ("pytest grader/ --time-limit", "tests/test_grader.py::test_misbehaving_submission_gets_complete_results_with_reasons"),
    ("pytest grader/ --memory-limit", "tests/test_grader.py::test_misbehaving_submission_gets_complete_results_with_reasons"),
    ("pytest grader/ --artifacts", "tests/test_grader.py::test_misbehaving_submission_gets_complete_results_with_reasons"),
    ("pytest grader/", "tests/test_grader.py::test_reference_scores_full_marks"),
    ("python -m grader.batch", "tests/test_grader.py::test_batch_grades_every_submission_into_a_gradebook"),
    ("python -m grader.gradescope", "tests/test_grader.py::test_gradescope_package_holds_scripts_and_grader_bundle"),
    ("python benchmarks/grade_time.py --batch", "tests/test_benchmark_script.py::test_grade_time_batch_reports_throughput_and_peak_memory"),
    ("python benchmarks/grade_time.py", "tests/test_benchmark_script.py::test_grade_time_prints_each_grading_and_the_median_against_the_budget"),
    ("python -m grader.similarity", "tests/test_similarity.py::test_command_writes_a_csv_with_a_header_even_when_nothing_matches"),
    ("pytest grader/ --sandbox-user", "tests/test_sandbox.py::test_an_unknown_sandbox_user_is_a_one_line_usage_error"),
    ("python benchmarks/train_speed.py --compare precision", "tests/test_benchmark_script.py::test_precision_comparison_prints_fp32_bf16_and_their_ratio"),
    ("python benchmarks/train_speed.py", "tests/test_benchmark_script.py::test_train_speed_benchmark_prints_both_paths_and_their_ratio"),
    ("python -m grader.solution --write-stubs", "tests/test_readme.py::test_stub_commands_run"),
    ("python -m grader.solution --check", "tests/test_readme.py::test_stub_commands_run"),
    ("python -m grader.solution --release", "tests/test_readme.py::test_release_command_runs"),
    ("python -m grader.solution --branch", "tests/test_solution_export.py::test_branch_holds_exactly_the_exported_tree"),
    ("python -m grader.solution /tmp/", "tests/test_solution_export.py::test_export_refuses_a_non_empty_destination"),
    ("apt-get install -y dataset-fashion-mnist", ".ci/run"),
    ("python hw2/main.py --method all --type unstructured --arch lenet5 --dataset fashion-mnist",
     "tests/test_fashion_mnist.py::test_lenet5_on_fashion_mnist_imp_keeps_accuracy_within_one_point_of_dense"),
    ("python hw2/main.py --method sweep", "tests/test_sweep.py::test_main_sweep_prints_the_table_and_writes_json_and_plot"),
    ("python hw2/main.py --method all --scope global", "tests/test_global_pruning.py::test_main_scope_global_saves_an_omp_global_model_at_the_target"),
    ("python hw2/main.py --method imp --type filter --criterion thinet", "tests/test_thinet.py::test_main_criterion_thinet_saves_an_imp_thinet_model"),
    ("python -m hw2.report", "tests/test_report.py::test_cli_reports_models_writes_json_and_the_score_plot"),
    ("python -m hw2.train", "tests/test_precision.py::test_train_cli_records_precision_and_float32_accuracy_and_removes_its_state"),
]


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def where(command: str) -> str | None:
    for prefix, place in COVERAGE:
        if command.startswith(prefix):
            return place
    return None


def test_every_readme_command_is_run_somewhere():
    commands = readme_commands()
    assert len(commands) > 20
    missing = [c for c in commands if where(c) is None]
    assert not missing, f"README commands no test or .ci/run runs (add them to COVERAGE): {missing}"
    ci = CI.read_text()
    for command in commands:
        place = where(command)
        if place == ".ci/run":
            key = {"bash run_reference.sh": "run_reference.sh", "apt-get install -y dataset-fashion-mnist": "dataset-fashion-mnist"}.get(command, "pytest")
            assert key in ci, f".ci/run does not run {command!r}"
        elif place.startswith("tests/"):
            path, test = place.split("::")
            assert re.search(rf"def {test}\(", (REPO_ROOT / path).read_text()), f"{place} does not exist"


def test_stub_commands_run():
    for flag in ("--check", "--write-stubs"):
        result = subprocess.run([sys.executable, "-m", "grader.solution", flag], cwd=REPO_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert subprocess.run(["git", "diff", "--quiet", "--", "hw2/pruning.py"], cwd=REPO_ROOT).returncode == 0, \
        "--write-stubs changed the committed stubs"


def test_release_command_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grader.solution", "--release", str(tmp_path / "student")],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "student" / "hw2" / "pruning.py").is_file() and not (tmp_path / "student" / "solution").exists()
    assert (tmp_path / "student" / ".git").is_dir() and "one commit" in result.stdout


@pytest.mark.slow
def test_student_self_check_grades_a_synthetic_run(tmp_path):
    """The two self-check commands, in the student release with the reference dropped in: full visible marks."""
    release = release_with_reference(tmp_path / "student")
    run = subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--epochs", "0",
                          "--dense-epochs", "1", "--no-progress"], cwd=release, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    grade, results = grade_release(release, "--public", "--dataset", "synthetic")
    assert grade.returncode == 0, grade.stdout[-3000:]
    total = re.search(r"^TOTAL\s+(\S+)\s+(\S+)", grade.stdout, flags=re.M)
    visible = {n: t for n, t in graded_tests(REPO_ROOT).items() if t["visibility"] == "visible"}
    assert total and float(total.group(1)) == float(total.group(2)) > 0, grade.stdout[-2000:]
    assert {t["name"] for t in results["tests"]} == set(visible) and all(t["status"] == "passed" for t in results["tests"])
    hidden = sum(t["points"] for t in graded_tests(REPO_ROOT).values() if t["visibility"] != "visible")
    assert float(total.group(2)) + hidden == 100, (total.group(2), hidden)
    readme = re.sub(r"\s+", " ", README.read_text())
    assert f"({hidden:g} of the 100 points)" in readme and f"hidden tests ({hidden:g} points)" in readme, \
        "the README's count of the hidden points is out of date"


def readme_function_order() -> list[str]:
    section = README.read_text().split("### What to implement, in this order")[1].split("\n### ")[0]
    return re.findall(r"^\| \d+ \| `(\w+)\(", section, flags=re.MULTILINE)


def test_order_of_work_is_the_walkthroughs_and_covers_every_graded_function():
    """The README's table lists the graded functions in the order the walkthrough first needs them."""
    order = readme_function_order()
    stubs = ast.parse((REPO_ROOT / "hw2" / "pruning.py").read_text())
    graded = [node.name for node in stubs.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
    assert set(order) == set(graded[:len(order)]) and len(order) == 11, order  # the bonus functions come after
    notebook = nbformat.read(REPO_ROOT / "hw2" / "walkthrough.ipynb", as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    scan = source.find("sensitivity_scan(")  # the scan prunes with the two mask functions (hw2/analysis.py)
    assert scan >= 0 and "pruning.unstructured_prune" in (REPO_ROOT / "hw2" / "analysis.py").read_text()
    first_use = {name: source.find(f"pruning.{name}(") for name in order}
    first_use.update({name: min(first_use[name], scan) for name in ("unstructured_prune", "filter_prune")})
    assert all(position >= 0 for position in first_use.values()), first_use
    assert sorted(order, key=first_use.get) == order, sorted(order, key=first_use.get)
    main = (REPO_ROOT / "hw2" / "main.py").read_text()
    assert "prune_channels_after_filter_prune" not in main  # the README: 11 is run by the walkthrough and the grader
    assert all(name in main for name in ("read_prune_ratios_from_yaml", "oneshot_magnitude_prune",
                                         "iterative_magnitude_prune", "plot_mask", "plot_sparsity_vs_accuracy"))


def test_no_product_file_names_an_issue_or_the_build_machines_paths():
    """Product files (everything but the project's own tests) speak of the homework, not of how it was built."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    offending = []
    for rel in listed:
        path = REPO_ROOT / rel
        if rel.startswith("tests/") or not path.is_file() or path.suffix in (".pt", ".png"):
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if re.search(r"\bissues? #?\d|\.\./shared|shared/data|2-core CPU sandbox", line, flags=re.IGNORECASE):
                offending.append(f"{rel}:{number}: {line.strip()[:100]}")
    assert not offending, offending
