"""Whether a factory that a store names is the researcher's own code: the one check every reader of a store makes
before calling a `package.module:function` it read there (a saved model's custom network, a dataset factory key);
and whether a folder a store names is the researcher's own, before the report imports from it.

May import: the standard library only (ablate.datasets and ablate.models both use it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import site
import stat
import sys
import sysconfig
from pathlib import Path


def foreign_code(reference: str) -> str | None:
    """Why the factory `package.module:function` is not the researcher's own code — its module is Python's, an
    installed package's or ablate's, or the function was only imported into it — or None when it is (a module on
    the path outside those folders, e.g. beside the study). A factory that a store names (a saved model's
    ablate.json, a trial's dataset key) is called only then: a store anyone may write to must not make ablate call,
    say, subprocess:run with arguments of its choosing. Imports the module (the researcher's own) to see where the
    function comes from."""
    module_name, _, function = reference.partition(":")
    top = module_name.split(".")[0]
    if not function or not all(part.isidentifier() for part in module_name.split(".")):
        return "not a `package.module:function` reference"
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "a module of Python's standard library"
    if top == "ablate":
        return "ablate's own code"
    found = importlib.util.find_spec(top)  # a top-level name: found without importing anything
    if found is None:
        return f"a module '{top}' not importable here (run from the folder that holds it)"
    where = [found.origin] if found.origin else list(found.submodule_search_locations or [])  # a namespace package
    if not where or any(Path(place).resolve().is_relative_to(folder) for place in where for folder in _installed()):
        return "an installed package"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — the researcher's module fails to import: nothing to call
        return f"a module that fails to import here ({type(exc).__name__}: {exc})"
    defined_in = getattr(getattr(module, function, None), "__module__", None)
    if defined_in is None or defined_in.split(".")[0] != top:
        return f"not a function defined in {module_name} but imported there from {defined_in or 'elsewhere'}"
    return None


def foreign_folder(folder: str) -> str | None:
    """Why a folder that a store names (where `ablate run` imported a study's factories from) is not the researcher's
    own, or None when it is: an absolute folder here, not a filesystem's root, nor inside Python's, an installed
    package's or ablate's own folders, owned by whoever runs this and not writable by every user. Only then does the
    report import from it, and only after everything else on the path (see ablate.report's sources): a store anyone
    may write to must not put a folder of its choosing, such as /tmp, where ablate imports code from."""
    path = Path(folder)
    if not path.is_absolute() or not path.is_dir():
        return "not a folder here"
    path = path.resolve()
    if path.parent == path:
        return "a filesystem's root"
    if any(path.is_relative_to(place) for place in {*_installed(), Path(__file__).resolve().parent}):
        return "a folder of Python's, an installed package's or ablate's"
    status = path.stat()
    if hasattr(os, "getuid") and status.st_uid != os.getuid():
        return "owned by another user"
    if status.st_mode & stat.S_IWOTH:
        return "writable by anyone"
    return None


def _installed() -> set[Path]:
    """The folders of Python itself and of installed packages."""
    paths = sysconfig.get_paths()
    folders = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    folders += [*site.getsitepackages(), site.getusersitepackages()]
    return {Path(folder).resolve() for folder in folders}
