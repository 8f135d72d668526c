"""Read dataset pickles without running code from them.

A pickle names the callables that rebuild its objects, and `pickle.load` calls whatever they are, so a
dataset file from a mirror could run anything. Dataset batches hold only dicts, lists, strings, numbers and
numpy arrays: this unpickler resolves the few globals those need (numpy's array and dtype reconstruction,
under numpy 1's and numpy 2's module names, and the bytes of protocols 0-2) and refuses every other.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

ARRAY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),  # ndarray.__reduce__ of numpy 1 (the official CIFAR files)
        ("numpy._core.multiarray", "_reconstruct"),  # the same, written by numpy 2
        ("numpy.core.numeric", "_frombuffer"),  # ndarray.__reduce_ex__ at pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocols 0-2 (a codec by name, no code)
    }
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside the allowed set; `name` is its dotted name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"refused global {name}")
        self.name = name


def _bytes_of(*args: Any) -> bytes:
    """`bytes` as protocols 0-2 call it: `bytes()` for b'' (an empty array's buffer, a zero-image batch), never
    `bytes(n)`, which would allocate n zero bytes that the file names but does not hold."""
    if args and not isinstance(args[0], (str, bytes)):
        raise RefusedGlobal(f"bytes({type(args[0]).__name__})")
    return bytes(*args)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _bytes_of
        if (module, name) not in ARRAY_GLOBALS:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def load_arrays_pickle(file: IO[bytes]) -> Any:
    """Unpickle data made of builtin containers, strings, numbers and numpy arrays (Python 2 strings as
    latin-1, as the official CIFAR batches need); raises RefusedGlobal for anything else."""
    return _ArrayUnpickler(file, encoding="latin1").load()
