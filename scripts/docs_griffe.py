"""Griffe extension for the documentation site (``mkdocs.yml`` loads it for mkdocstrings).

The package's docstrings are Sphinx-style: fields (``:param x:``) that mkdocstrings parses, and
roles (``:class:`~.status.StatusSnapshot```) that it does not. This extension rewrites each role
into an mkdocs-autorefs link to the object's full path, resolved as Sphinx resolves it (the
object's own scopes first, then, for a name with a leading dot, any object whose path ends with
it). A role naming an object of the package that does not exist is a warning, and so is a public
module, class, function or method without a docstring: ``mkdocs build --strict`` fails on both.
Attributes documented the Sphinx way, with ``#:`` comments above them, get those comments as
their docstring. A role naming something outside the package (Airflow, the standard library) or
outside the pages of the API reference (private helpers, the protocols) stays code, unlinked.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import griffe

#: A warning logged under ``mkdocs.`` counts for ``mkdocs build --strict``.
log = logging.getLogger("mkdocs.plugins.querytasks.docstrings")

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|exc|mod|obj|const):`(?P<target>[^`]+)`")


def _is_private(path: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in path.split("."))


class SphinxRoles(griffe.Extension):
    """Turns Sphinx roles into autorefs links and reports broken ones and missing docstrings."""

    def __init__(self, linked: list[str] | None = None, require_docstrings: list[str] | None = None) -> None:
        """:param linked: module paths whose objects the API reference renders (links go there only).
        :param require_docstrings: module paths whose public modules, classes, functions and
            methods must have a docstring (an override is documented where it is declared).
        """
        super().__init__()
        self.linked = tuple(linked or ())
        self.require_docstrings = tuple(require_docstrings or ())

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite every docstring of the package once it is loaded."""
        objects = list(_walk(pkg))
        canonical = [obj.path for obj in objects]
        for obj in objects:
            if obj.docstring is None and obj.is_attribute:
                _read_doc_comment(obj)
            if obj.docstring is None:
                if self._requires_docstring(obj):
                    log.warning("%s has no docstring (%s)", obj.path, _where(obj))
                continue
            obj.docstring.value = ROLE.sub(
                lambda match, obj=obj: self._link(pkg, canonical, obj, match.group("target")),  # type: ignore[misc]
                obj.docstring.value,
            )

    def _requires_docstring(self, obj: griffe.Object) -> bool:
        if not obj.path.startswith(self.require_docstrings) or _is_private(obj.path):
            return False
        if obj.is_module:
            # An empty package (its __init__ holds only its submodules) needs none.
            return not obj.is_init_module or any(not m.is_module for m in obj.members.values())
        if obj.is_class:
            return True
        if not obj.is_function or obj.parent is None:
            return False
        if obj.parent.is_module:
            return True
        # A method (an override is documented where it is declared: a base class, Airflow's).
        return obj.parent.is_class and not _overrides(obj)

    def _link(self, pkg: griffe.Module, canonical: list[str], obj: griffe.Object, target: str) -> str:
        short = target.startswith("~")
        target = target.lstrip("~")
        suffix_search = target.startswith(".")
        target = target.lstrip(".")
        shown = target.rsplit(".", 1)[-1] if short else target
        path = _resolve(pkg, canonical, obj, target, suffix_search)
        if path is None:
            if suffix_search or target.startswith(pkg.path + ".") or not _external(pkg, obj, target):
                log.warning("%s: broken cross-reference %r (%s)", obj.path, target, _where(obj))
            return f"`{shown}`"
        if _is_private(path) or not path.startswith(self.linked):
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)  # type: ignore[arg-type]


def _read_doc_comment(attr: griffe.Object) -> None:
    """Sphinx's attribute doc comments: the ``#:`` lines just above the assignment."""
    if attr.lineno is None:
        return
    try:
        lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
    except (KeyError, TypeError):
        return
    comment: list[str] = []
    index = attr.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    if comment:
        attr.docstring = griffe.Docstring("\n".join(comment), lineno=index + 2, parent=attr)


def _where(obj: griffe.Object) -> str:
    return f"{obj.relative_filepath}:{obj.lineno}"


def _overrides(func: griffe.Object) -> bool:
    cls = func.parent
    if cls is None or not cls.is_class:
        return False
    if func.name.startswith("__") or not cls.bases:
        return func.name.startswith("__")
    try:
        mro = cls.mro()  # type: ignore[attr-defined]
    except Exception:  # a base outside the package: assume it declares the method
        return True
    if any(func.name in base.members for base in mro):
        return True
    # Bases outside the package (Airflow's) are not loaded: an override of theirs cannot be told.
    return any(not str(base).startswith("airflow_provider_querytasks") for base in cls.bases)


def _lookup(pkg: griffe.Module, path: str) -> str | None:
    """The canonical path of ``path`` within the package, or None."""
    if path == pkg.path:
        return path
    if not path.startswith(pkg.path + "."):
        return None
    try:
        found = pkg[path[len(pkg.path) + 1 :]]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    if found.is_alias:
        target = found.target_path  # type: ignore[union-attr]
        return _lookup(pkg, target) if target.startswith(pkg.path + ".") else None
    return str(found.path)


def _scopes(obj: griffe.Object) -> list[str]:
    scopes = []
    scope: griffe.Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    return scopes


def _resolve(
    pkg: griffe.Module, canonical: list[str], obj: griffe.Object, target: str, suffix_search: bool
) -> str | None:
    found = _lookup(pkg, target)
    if found:
        return found
    for scope in _scopes(obj):
        found = _lookup(pkg, f"{scope}.{target}")
        if found:
            return found
    if suffix_search:
        matches = [path for path in canonical if path.endswith("." + target)]
        if len(matches) == 1:
            return matches[0]
    return None


def _external(pkg: griffe.Module, obj: griffe.Object, target: str) -> bool:
    """Whether ``target`` names something outside the package, as the docstring's module sees it."""
    head = target.split(".", 1)[0]
    module = obj.module
    member = module.members.get(head)
    if member is not None and member.is_alias:
        return not member.target_path.startswith(pkg.path)  # type: ignore[union-attr]
    return "." in target and head != pkg.path
