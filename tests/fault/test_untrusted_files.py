"""Dataset files from a mirror are parsed, never executed: a CIFAR batch whose pickle asks to call anything but
numpy's array reconstruction is refused in one line naming the file and the call, and the call never runs.
Batches in every real layout (numpy 1 or 2 module names, pickle protocols 0-5) still load."""

from __future__ import annotations

import builtins
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures_formats import write_cifar10, write_cifar100

from selfsup.cli import main
from selfsup.data.safe_pickle import RefusedGlobal, load_arrays_pickle
from selfsup.data.sources import build_dataset
from selfsup.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
REAL_DATA = Path(os.environ.get("SELFSUP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


class _Shell:
    """Unpickles into os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    """Unpickles into builtins.exec(code): open-and-write without a shell."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _plant(batch: Path, payload: object) -> None:
    """Replace a real CIFAR batch by one of the right structure that also carries `payload`."""
    entry = pickle.loads(batch.read_bytes())
    batch.write_bytes(pickle.dumps({**entry, "batch_label": payload}, protocol=2))


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
def test_a_malicious_cifar_batch_runs_nothing_and_fails_in_one_line(tmp_path: Path, capsys, how: str):
    write_cifar10(tmp_path / "data")
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    marker = tmp_path / "pwned"
    payload = _Shell(f"touch {marker}") if how == "os.system" else _Exec(f"open({str(marker)!r}, 'w').write('x')")
    _plant(batch, payload)
    out = tmp_path / "out"
    args = ["pretrain", "data=cifar10", f"data.root={tmp_path / 'data'}", "views.crop_size=16", "device=cpu"]
    args += ["trainer.batch_size=8", "trainer.max_steps=1", "trainer.progress=false", "eval.every=0"]
    assert main([*args, f"output_dir={out}"]) == 2
    captured = capsys.readouterr()
    refused = "posix.system" if how == "os.system" else "__builtin__.exec"  # protocol 2 writes Python 2 names
    assert captured.err.splitlines() == [
        f"selfsup: error: {batch} is not a CIFAR batch: it asks to run {refused}, which a CIFAR batch never does; "
        f"delete it and get the dataset again (set data.root=DIR to the folder that holds cifar-10-batches-py/ "
        "or data.download=true)"
    ]
    assert not marker.exists() and not out.exists()


def test_the_cifar100_reader_is_restricted_too(tmp_path: Path):
    write_cifar100(tmp_path, n_train=20, n_test=10)
    marker = tmp_path / "pwned"
    _plant(tmp_path / "cifar-100-python" / "test", _Shell(f"touch {marker}"))
    with pytest.raises(UserError, match=r"cifar-100-python/test is not a CIFAR batch: it asks to run posix.system"):
        build_dataset("cifar100", tmp_path, "test")
    assert not marker.exists()


def test_real_format_batches_still_load(tmp_path: Path):
    for write, name in ((write_cifar10, "cifar10"), (write_cifar100, "cifar100")):
        images, labels = write(tmp_path)["test"]
        dataset = build_dataset(name, tmp_path, "test")
        assert np.array_equal(dataset.images, images) and np.array_equal(dataset.labels, labels)


@pytest.mark.skipif(not (REAL_DATA / "cifar-10-batches-py").is_dir(), reason="no real CIFAR-10 under SELFSUP_DATA")
def test_the_real_cifar10_batches_load():
    assert len(build_dataset("cifar10", REAL_DATA, "test")) > 0


@pytest.mark.parametrize(
    "protocol,numpy_module",
    [*((p, "numpy._core") for p in (0, 1, 2, 4, 5)), *((p, "numpy.core") for p in (0, 1, 2))],
)
def test_every_pickle_protocol_and_numpy_module_name_loads(protocol: int, numpy_module: str):
    """The official batches are Python 2 pickles naming numpy.core (a text opcode at protocols 0-2, so the
    name can be swapped in place); re-packed copies may use any protocol."""
    entry = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [3, 4], "batch_label": "b", b"raw": b"\xff"}
    data = pickle.dumps(entry, protocol=protocol).replace(b"numpy._core", numpy_module.encode())
    loaded = load_arrays_pickle(io.BytesIO(data))
    assert np.array_equal(loaded["data"], entry["data"]) and loaded["labels"] == [3, 4] and loaded[b"raw"] == b"\xff"


def test_an_object_array_cannot_smuggle_a_call():
    """Object arrays unpickle their items through the same restricted lookup."""
    data = pickle.dumps({"data": np.array([_Shell("true")], dtype=object)}, protocol=2)
    with pytest.raises(RefusedGlobal, match="posix.system"):
        load_arrays_pickle(io.BytesIO(data))
