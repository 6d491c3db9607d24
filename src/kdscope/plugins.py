"""The user's own code: modules named by a study (``imports:``) or ``--import``, and plugins.

A dataset, model, method or analysis registered in the user's Python code
(``@kdscope.register_model(...)`` and the like) exists once the module that registers it has been
imported. Two ways bring such modules in before a study is checked against the registries:

* **by name**, :func:`import_modules`: the study file's ``imports: [my_models]`` or
  ``kdscope run --import my_models``. The study file's folder is put first on ``sys.path``
  (and left there, as ``python script.py`` leaves the script's folder), so that
  ``my_models.py`` beside the study file is found;
* **as a plugin**, :func:`load_plugins`: every installed distribution that declares an entry
  point in the group ``kdscope.plugins``::

      [project.entry-points."kdscope.plugins"]
      my_plugin = "my_package.kdscope_entries"

  is imported once, the first time kdscope needs its registries (the CLI, :func:`load_study`).
  A broken plugin is one warning line on stderr; kdscope goes on without it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdscope.errors import ConfigError

__all__ = [
    "GROUP",
    "UserCode",
    "check_module_name",
    "import_modules",
    "load_plugins",
    "user_code",
]

GROUP = "kdscope.plugins"
"""The entry-point group whose modules kdscope imports (:func:`load_plugins`)."""

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_loaded = False
#: the user's modules imported by name in this process, in order
_imported: list[str] = []


def check_module_name(name: object) -> str:
    """``name`` if it is a dotted Python module name (``pkg.sub.module``); a ConfigError
    otherwise (a path like ``./my_models`` is the usual slip)."""
    if not isinstance(name, str) or not _MODULE.fullmatch(name) or not name.isascii():
        raise ConfigError(
            f"imports: {name!r} is not a Python module name; write a dotted name like "
            "'my_package.my_module'"
        )
    return name


def _on_path(base_dir: Path) -> None:
    """Put ``base_dir`` first on ``sys.path`` (once)."""
    folder = str(base_dir.resolve())
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def _import_one(name: str) -> None:
    """Import ``name``; any failure is one ConfigError line naming the module and the error."""
    try:
        importlib.import_module(name)
        if name not in _imported:
            _imported.append(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            hint = " (name the module without '.py')" if name.endswith(".py") else ""
            raise ConfigError(
                f"imports: cannot import {name!r}: ModuleNotFoundError: {e}{hint}"
            ) from None
        raise ConfigError(_raised(name, e)) from None
    except Exception as e:  # noqa: BLE001  (the user's module may raise anything)
        raise ConfigError(_raised(name, e)) from None


def _raised(name: str, e: BaseException) -> str:
    """The one line for an exception raised while the user's module ran."""
    return (
        f"imports: module {name!r} raised {type(e).__name__}: {_one_line(e)} (run "
        f'python -c "import {name}" to see the traceback)'
    )


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line."""
    return " ".join(str(e).split())


def import_modules(names: Iterable[str], base_dir: str | Path | None = None) -> None:
    """Import the user's modules ``names`` (dotted names), in order, so that what they register
    is known. With ``base_dir`` (the study file's folder) that folder is put first on
    ``sys.path``, even when ``names`` is empty, so that a model ``factory`` beside the study
    file is found too. A malformed name, a module that cannot be found and one that raises are each
    one :class:`~kdscope.errors.ConfigError` line. A module already imported is not run again."""
    names = [check_module_name(n) for n in names]
    if base_dir is not None:  # also for a model factory named by path ("my_models:fn")
        _on_path(Path(base_dir))
    for name in names:
        _import_one(name)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of :data:`GROUP`, sorted by name."""
    return sorted(importlib.metadata.entry_points(group=GROUP), key=lambda ep: ep.name)


def load_plugins() -> list[str]:
    """Import every plugin of the ``kdscope.plugins`` entry-point group, once per process (a
    second call does nothing). A plugin that fails to load is one warning line on stderr naming
    it and its error; the others still load. Returns the names of the plugins loaded now."""
    global _loaded  # noqa: PLW0603  (a process-wide "done once")
    if _loaded:
        return []
    _loaded = True
    loaded = []
    for ep in _entry_points():
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001  (a third-party module may raise anything)
            print(
                f"kdscope: warning: plugin {ep.name!r} ({ep.value}) not loaded: "
                f"{type(e).__name__}: {_one_line(e)}",
                file=sys.stderr,
            )
            continue
        loaded.append(ep.name)
    return loaded


@dataclass(frozen=True)
class UserCode:
    """What a fresh worker process (:mod:`kdscope.executor`) imports to know what this process
    registered: its ``sys.path``, the plugins, and the user's modules imported by name. Code
    registered in a script run as ``__main__`` is known to a worker only if the script
    registers it at import time (a worker imports the script as ``__mp_main__``)."""

    path: tuple[str, ...]
    modules: tuple[str, ...]

    def load(self) -> None:
        """Import it in this process (a worker)."""
        sys.path[:] = list(dict.fromkeys([*self.path, *sys.path]))
        load_plugins()
        for name in self.modules:
            _import_one(name)


def user_code() -> UserCode:
    """This process's user code (:class:`UserCode`), for a worker to load."""
    return UserCode(tuple(sys.path), tuple(_imported))
