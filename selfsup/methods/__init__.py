"""Method implementations; importing this package imports every module in it, and each method module
registers itself in METHODS, so a new method is one new file here (plus its preset and its test entry)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
