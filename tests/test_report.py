"""`selfsup report` on fixture run directories written here directly (config.yaml, metrics.jsonl and the
eval JSONs that `selfsup sweep` writes), so no training is needed."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pytest
import torch
from threadpoolctl import threadpool_limits

from selfsup.cli import main
from selfsup.errors import UserError
from selfsup.report import build_report
from selfsup.report import embedding as embedding_module
from selfsup.report.collect import METRICS, Hours, accuracy_series, dynamics_series, load_runs, symmetry_pairs
from selfsup.report.devices import device_gpu, reference_gpu
from selfsup.report.plots import dynamics_plots, symmetry_figure

matplotlib.use("Agg")  # the report draws on Agg canvases itself; this keeps anything else off a display

# checkpoint -> (epoch, step, device-hours, images seen); B trains twice as fast as A
CHECKPOINTS = {
    "a": {"epoch-0000": (0, 0, 0.0, 0), "epoch-0010": (10, 100, 1.0, 50_000), "epoch-0020": (20, 200, 2.0, 100_000)},
    "b": {"epoch-0000": (0, 0, 0.0, 0), "epoch-0010": (10, 100, 0.5, 50_000), "epoch-0020": (20, 200, 1.0, 100_000)},
}
TOP1 = {  # (run, task) -> top-1 per checkpoint
    ("a", "knn"): [10.0, 40.0, 60.0],
    ("a", "linear"): [12.0, 45.0, 65.0],  # the last one is partial (complete: false)
    ("b", "knn"): [10.0, 50.0, 70.0],
    ("b", "linear"): [11.0, 52.0, 72.0],
}
IDENTITY = {"a": ("simclr", "cpu (test)"), "b": ("directpred", "Tesla P40")}


def write_config(run: Path, method: str) -> None:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"method:\n  name: {method}\nbackbone:\n  name: resnet18\n"
        "data:\n  name: cifar10\n  test_split: test\n  eval_train_split: train\n"
        "trainer:\n  epochs: 20\n  batch_size: 256\n"
    )


def write_result(run: Path, checkpoint: str, task: str, top1: float, complete: bool, device: str) -> None:
    """An eval result as selfsup.eval.offline.evaluate writes it."""
    epoch, step, hours, images = CHECKPOINTS[run.name][checkpoint]
    cost = {
        "device_seconds": hours * 3600,
        "images_seen": images,
        "peak_memory_bytes": 2_500_000_000 if epoch else 0,
        "flops_per_image": None,
        "devices": 1,
        "device_name": device,
        "device_hours": hours,
    }
    result = {
        "task": task,
        "complete": complete,
        "metrics": {"top1": top1, "top5": min(100.0, top1 + 20)},
        "params": {},
        "settings": {},
        "dataset": {"name": "cifar10", "train_split": "train", "test_split": "test"},
        "checkpoint": {
            "path": str(run / "checkpoints" / f"{checkpoint}.pt"),
            "sha256": hashlib.sha256(f"{run.name}/{checkpoint}".encode()).hexdigest(),
            "epoch": epoch,
            "step": step,
        },
        "cost": cost,
        "eval_cost": {"seconds": 1.5, "device": "cpu"},
        "extra": {},
        "config": {},
        "git_commit": "0" * 40,
        "date": "2025-01-01T00:00:00+00:00",
    }
    out = run / "eval" / checkpoint
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.json").write_text(json.dumps(result, indent=2))


def dynamics(step: int, predictor: bool) -> dict:
    record = {
        "step": step,
        "epoch": step // 10,
        "dynamics/effective_rank": 10.0 + step,
        "dynamics/embedding_std": 0.05,
        "dynamics/alignment": 1.0 - step / 400,
        "dynamics/uniformity": -1.0 - step / 200,
    }
    if predictor:
        record["dynamics/predictor_asymmetry"] = 0.5 / (1 + step)
        record["dynamics/predictor_eigenvalues"] = [1.0 + step, 0.5, 0.1, -0.01]
        record["dynamics/correlation_eigenvalues"] = [2.0 + step, 0.3, 0.05, 0.001]
    return record


def write_metrics(run: Path, predictor: bool) -> None:
    """Training, cost and dynamics records, and a last line a running process is still writing."""
    lines = []
    for step in (0, 100, 200):
        lines.append({"step": step, "epoch": step // 10, "train/loss": 5.0 - step / 100, "train/lr": 0.1})
        lines.append({"step": step, "epoch": step // 10, "cost/device_seconds": 36.0 * step, "cost/devices": 1})
        lines.append(dynamics(step, predictor))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run / "metrics.jsonl").write_text(text + '{"step": 300, "dynamics/effective_ra')


def write_run(root: Path, name: str) -> Path:
    run = root / name
    method, device = IDENTITY[name]
    write_config(run, method)
    write_metrics(run, predictor=method == "directpred")
    for task in ("knn", "linear"):
        for i, checkpoint in enumerate(CHECKPOINTS[name]):
            complete = not (name == "a" and task == "linear" and checkpoint == "epoch-0020")
            write_result(run, checkpoint, task, TOP1[name, task][i], complete, device)
    if name == "b":  # `selfsup eval knn` of last.pt, the same file as epoch-0020: one point, not two
        shutil.copytree(run / "eval" / "epoch-0020", run / "eval" / "last")
    write_features(run)
    return run


def write_features(run: Path, n: int = 90, classes: int = 3, names: list[str] | None = None) -> None:
    """The test-split feature cache of `last` as kNN evaluation writes it: three well separated clusters
    (without class names, as caches written before they were stored)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    features = torch.randn(n, 16, generator=g) * 0.1 + torch.eye(16)[labels] * 3
    cache = {"key": {}, "features": features, "labels": labels, **({"classes": names} if names else {})}
    (run / "eval" / "last").mkdir(parents=True, exist_ok=True)
    torch.save(cache, run / "eval" / "last" / "features-test.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [write_run(root, "a"), write_run(root, "b")]


def no_evaluation(*args) -> None:
    raise AssertionError("the feature caches exist: nothing should be evaluated")


@pytest.fixture(scope="module")
def built(runs: list[Path], tmp_path_factory) -> tuple[Path, str]:
    """One report of both runs through the CLI, and what it printed (drawing is the slow part: done once)."""
    out = tmp_path_factory.mktemp("report")
    argv = [f"runs=[{runs[0]},{runs[1]}]", f"out={out}", "hours_scale=2.5", 'hours_label="P40 hours"', "embedding=true"]
    stdout = io.StringIO()
    # one OpenMP thread: on a busy 2-core machine t-SNE's spin-waiting threads made it 20-40x slower
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), threadpool_limits(1):
        patch.setattr(embedding_module, "evaluate", no_evaluation)
        assert main(["report", *argv]) == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def report(built: tuple[Path, str]) -> Path:
    return built[0]


def test_report_tasks_are_the_evaluation_tasks():
    from selfsup.eval.offline import TASKS

    assert tuple(METRICS) == TASKS


def test_plotted_points_are_each_checkpoints_cost_and_metric(runs: list[Path]):
    loaded = load_runs(runs)
    a, b = "simclr / resnet18 / cifar10", "directpred / resnet18 / cifar10"
    assert [run.label for run in loaded] == [a, b]
    assert accuracy_series(loaded, "knn", "device-hours") == {
        a: ([0.0, 1.0, 2.0], TOP1["a", "knn"]),
        b: ([0.0, 0.5, 1.0], TOP1["b", "knn"]),
    }
    assert accuracy_series(loaded, "knn", "device-hours", Hours(2.5))[a] == ([0.0, 2.5, 5.0], TOP1["a", "knn"])
    partial_left_out = ([0.0, 1.0], TOP1["a", "linear"][:2])
    assert accuracy_series(loaded, "linear", "device-hours")[a] == partial_left_out
    assert accuracy_series(loaded, "linear", "images-seen")[b] == ([0.0, 50_000.0, 100_000.0], TOP1["b", "linear"])
    assert dynamics_series(loaded, "dynamics/effective_rank")[b] == ([0.0, 100.0, 200.0], [10.0, 110.0, 210.0])
    assert list(dynamics_series(loaded, "dynamics/predictor_asymmetry")) == [b]
    assert Hours(2.5, "P40 hours").axis_label == "P40 hours (device-hours x 2.5)"
    assert Hours().axis_label == "device-hours"


def test_hours_ref_converts_each_gpu_by_its_datasheet_rate(runs: list[Path], tmp_path: Path, capsys):
    """Run b trained on a P40 (11.8 TFLOP/s fp32): in V100-hours (125 fp16 tensor) its hours shrink by 11.8 / 125;
    run a trained on a CPU, which has no rate: refused in one line before anything is written."""
    a, b = load_runs(runs)
    v100 = Hours(reference=reference_gpu("V100"))
    assert [v100.of(c) for c in b.checkpoints] == pytest.approx([0.0, 0.5 * 11.8 / 125, 11.8 / 125])
    assert v100.name == "V100-hours" and "the V100's 125 fp16 tensor" in v100.axis_label
    with pytest.raises(UserError, match=r"trained on cpu \(test\), which has no peak rate"):
        v100.of(a.checkpoints[-1])
    names = {
        "Tesla P40": "p40",
        "NVIDIA GeForce GTX 1080 Ti": "1080ti",
        "Tesla V100-SXM2-16GB": "v100",
        "NVIDIA A100-SXM4-40GB": "a100",
        "NVIDIA A10": "a10",
        "NVIDIA L40S": "l40s",
        "NVIDIA H100 PCIe": "h100_pcie",
        "NVIDIA H100 80GB HBM3": "h100",
        "NVIDIA H200": "h200",
    }
    assert {name: getattr(device_gpu(name), "key", None) for name in names} == names
    assert device_gpu("cpu (AMD EPYC 7B13, 2 threads)") is None

    out = tmp_path / "report"
    assert main(["report", f"runs=[{runs[1]}]", f"out={out}", "hours_ref=p40"]) == 0
    header, _, *rows = (out / "results.md").read_text().splitlines()
    column = [cell.strip() for cell in header.split("|")].index("P40-hours")
    assert [cell.strip() for cell in rows[0].split("|")][column] == "1"  # a P40 run: P40-hours = its hours
    for argv, message in [
        ([f"runs=[{runs[0]}]", "hours_ref=p40"], "which has no peak rate in the table"),
        ([f"runs=[{runs[1]}]", "hours_ref=p4"], "hours_ref=p4 is not a reference GPU; did you mean"),
        ([f"runs=[{runs[1]}]", "hours_ref=p40", "hours_scale=2"], "give one of them"),
    ]:
        capsys.readouterr()
        assert main(["report", *argv, f"out={tmp_path / 'refused'}"]) == 2
        err = capsys.readouterr().err
        assert message in err and "\n" not in err.strip()
    assert not (tmp_path / "refused").exists()


def test_report_writes_every_plot_and_table(report: Path):
    stems = [f"{task}-vs-{axis}" for task in ("knn", "linear") for axis in ("device-hours", "images-seen")]
    measures = ["effective_rank", "embedding_std", "alignment", "uniformity", "predictor_asymmetry", "spectra"]
    stems += [f"dynamics-{m}" for m in measures] + ["embedding-a", "embedding-b"]
    stems += ["dynamics-trajectories-b"]  # b has a predictor: its eigenvalue trajectories
    expected = {f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")}
    written = {p.name for p in report.iterdir()}
    assert written == expected | {"results.csv", "results.md", "index.html"}
    assert all((report / name).stat().st_size > 1000 for name in expected)


def test_csv_has_every_run_and_checkpoint_and_marks_partial_results(report: Path):
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert [(Path(r["run"]).name, r["checkpoint"]) for r in rows] == [
        (run, ckpt) for run in ("a", "b") for ckpt in ("epoch-0000", "epoch-0010", "epoch-0020")
    ]
    last_a = rows[2]
    assert last_a["method"] == "simclr" and last_a["backbone"] == "resnet18" and last_a["dataset"] == "cifar10"
    assert (last_a["epoch"], float(last_a["device_hours"]), int(last_a["images_seen"])) == ("20", 2.0, 100_000)
    assert float(last_a["peak_memory_gb"]) == 2.5
    assert float(last_a["seconds_per_epoch"]) == 2.0 * 3600 / 20 and rows[0]["seconds_per_epoch"] == ""
    assert (float(last_a["knn/top1"]), float(last_a["linear/top1"]), last_a["partial"]) == (60.0, 65.0, "linear")
    assert all(r["partial"] == "" for r in rows[3:])


def test_markdown_shows_each_runs_newest_finished_results(built: tuple[Path, str]):
    report, printed = built
    table = (report / "results.md").read_text()
    assert printed == table + f"{report / 'index.html'}\n"
    header, _, a, b = (line.strip("| ").split(" | ") for line in table.splitlines())
    assert header[6:8] == ["device-hours", "P40 hours"]
    # 2 device-hours over 20 epochs on one device: 6 minutes per epoch; the partial linear result left out
    assert a[4:] == ["epoch-0020", "20/20", "2", "5", "100k", "2.50 GB", "6.0 min", "60.00", "–"]
    assert b[4:] == ["epoch-0020", "20/20", "1", "2.5", "100k", "2.50 GB", "3.0 min", "70.00", "72.00"]


def test_html_is_one_self_contained_page_in_order(report: Path):
    page = (report / "index.html").read_text()
    without_images = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', "", page)
    assert "http" not in without_images and "src=" not in without_images and "<script" not in without_images
    assert page.count('src="data:image/png;base64,') == 13  # 4 accuracy, 6 dynamics, b's trajectories, 2 embeddings
    order = ["knn-vs-device-hours.png", "<table>", "dynamics-effective_rank.png", "embedding-a.png", "embedding-b.png"]
    assert [page.index(marker) for marker in order] == sorted(page.index(marker) for marker in order)
    assert "Tesla P40" in page and "cpu (test)" in page and "UTC" in page


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium installed (Debian: apt-get install -y --no-install-recommends chromium)")


def test_html_renders_in_headless_chromium(report: Path, tmp_path: Path):
    from PIL import Image

    shot = tmp_path / "page.png"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        (report / "index.html").resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    problems = [line for line in done.stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]
    assert problems == []
    assert shot.is_file() and shot.stat().st_size > 0, done.stderr[-2000:]
    low, high = zip(*Image.open(shot).convert("RGB").getextrema(), strict=True)
    assert low != high  # not a blank page


def test_embedding_maps_every_run(report: Path):
    page = (report / "index.html").read_text()
    assert "t-SNE of the test features of simclr / resnet18 / cifar10" in page
    assert (report / "embedding-a.png").stat().st_size > 1000


@pytest.mark.parametrize("cache", ["missing", "outdated"])
def test_embedding_runs_knn_evaluation_first_without_a_current_cache(cache: str, runs, tmp_path: Path, monkeypatch):
    calls = []

    def evaluate(task: str, run_dir: Path, checkpoint: str) -> None:
        calls.append((task, run_dir, checkpoint))
        write_features(run_dir, n=10, names=["cat", "dog", "ship"])

    monkeypatch.setattr(embedding_module, "evaluate", evaluate)
    run = load_runs([shutil.copytree(runs[0], tmp_path / "a")])[0]
    if cache == "missing":
        (run.path / "eval" / "last" / "features-test.pt").unlink()
    else:  # last.pt has moved on since the cache was extracted
        (run.path / "checkpoints").mkdir()
        (run.path / "checkpoints" / "last.pt").write_bytes(b"newer")
        (run.path / "checkpoints" / "last.pt.sha256").write_text(f"{'1' * 64}  last.pt\n")
    features, labels, names = embedding_module.load_test_features(run, "last")
    assert calls == [("knn", run.path, "last")]
    assert features.shape == (10, 16) and labels.tolist()[:4] == [0, 1, 2, 0]
    assert [embedding_module.class_label(int(label), names) for label in labels[:4]] == ["cat", "dog", "ship", "cat"]


def test_legend_falls_back_to_class_indices_without_names():
    assert [embedding_module.class_label(i, ["cat", "dog"]) for i in (0, 1, 2)] == ["cat", "dog", "2"]
    assert embedding_module.class_label(0, []) == "0"


def test_runs_with_one_identity_are_told_apart_by_directory(tmp_path: Path):
    paths = []
    for parent in ("x", "y"):
        write_config(tmp_path / parent / "a", "simclr")
        write_result(tmp_path / parent / "a", "epoch-0010", "knn", 40.0, True, "cpu")
        paths.append(tmp_path / parent / "a")
    assert [run.label for run in load_runs(paths)] == [
        "simclr / resnet18 / cifar10 (a-1)",
        "simclr / resnet18 / cifar10 (a-2)",
    ]


@pytest.fixture
def bad_runs(runs: list[Path], tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "not_run").mkdir()
    write_config(tmp_path / "unevaluated", "simclr")
    return {
        "missing": tmp_path / "missing",
        "not_run": tmp_path / "not_run",
        "unevaluated": tmp_path / "unevaluated",
        "run": runs[0],
    }


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("missing", "does not exist; pass runs=[DIR,...]"),
        ("not_run", "no config.yaml"),
        ("unevaluated", "no evaluation results yet: run `selfsup sweep run="),
    ],
)
def test_runs_that_cannot_be_reported_raise_user_errors(name: str, fix: str, bad_runs: dict[str, Path], tmp_path):
    with pytest.raises(UserError, match=re.escape(fix)):
        build_report([bad_runs["run"], bad_runs[name]], tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        ([], "needs runs=[DIR,...]"),
        (["runs=[{missing}]"], "does not exist"),
        (["runs=[{not_run}]"], "no config.yaml"),
        (["runs=[{unevaluated}]"], "run `selfsup sweep run="),
        (["runs=[{run}]", "run={run}"], "did you mean 'runs'"),
        (["runs=[{run},{run}]"], "listed twice"),
        (["runs=[{run}]", "hours_scale=fast"], "is not a number"),
        (["runs=[{run}]", "hours_scale=0"], "must be a positive number"),
        (["runs=[{run}]", "embedding=maybe"], "embedding=true"),
    ],
)
def test_cli_exits_2_with_one_line_naming_the_fix(args: list[str], fix: str, bad_runs, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["report", *(arg.format(**bad_runs) for arg in args), f"out={out}"]) == 2
    error = capsys.readouterr().err
    assert fix in error and error.count("\n") == 1
    assert not (out / "index.html").exists()


def test_time_per_epoch_reads_at_a_glance():
    from selfsup.report.tables import duration

    assert [duration(s) for s in (None, 45, 360, 5400, 7200)] == ["–", "45 s", "6.0 min", "1.50 h", "2.00 h"]


def test_symmetry_regularisation_is_drawn_beside_its_plain_twin(tmp_path: Path):
    """The non-contrastive dynamics study's Fig. 2: a run with symmetry regularisation and the run of the same
    method and predictor without it, in one figure, from hand-made metrics files (no training)."""
    settings = {"plain": "linear", "reg": "linear", "mlp": "mlp"}
    for name, predictor in settings.items():
        write_run(tmp_path, "b").rename(tmp_path / name)
        reg = 0.1 if name == "reg" else 0.0
        config = tmp_path / name / "config.yaml"
        config.write_text(
            config.read_text().replace(
                "name: directpred\n", f"name: byol\n  predictor:\n    type: {predictor}\n    symmetry_reg: {reg}\n"
            )
        )
    out = tmp_path / "report"
    out.mkdir()
    runs = load_runs([tmp_path / name for name in settings])
    assert [(plain.name, reg.name) for plain, reg in symmetry_pairs(runs)] == [("plain", "reg")]
    names = [plot.name for plot in dynamics_plots(runs, out)]
    assert [n for n in names if n.startswith("dynamics-symmetry")] == ["dynamics-symmetry-reg"]
    fig = symmetry_figure(*symmetry_pairs(runs)[0])
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "without: eigenvalues of F" and titles[3] == "λ 0.1: eigenvalues of F"
    assert fig.axes[0].get_ylim() == fig.axes[3].get_ylim()  # one y scale per column: the rows compare
