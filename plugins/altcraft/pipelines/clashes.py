"""DAG ids of pipeline specs that a DAG of another file Airflow parses declares too.

Airflow keeps one DAG per id. A DagBag of a folder (tests, ``airflow dags list-import-errors --local``)
reports the second file's DAG as an import error, but the DAG processor of Airflow 3.3 parses each file
alone and stores whichever file it parsed last: without a word, the id's DAG flips between the pipeline and
the other DAG. So `altcraft.pipelines.load_pipelines` refuses such a spec, naming the other file.

Other files are never run: a Python DAG file's ids are read from its syntax tree (`declared_dag_ids`),
another pipelines folder's from its specs. Searched: the folder of the pipelines' DAG files, every local
DAG bundle configured (``[dag_processor] dag_bundle_config_list``; the DAG folder by default) and Airflow's
example DAGs when ``[core] load_examples`` is on. See docs/pipelines.md.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Collection, Iterator
from pathlib import Path

from altcraft.pipelines.dag_folder import SPECS_FOLDER

log = logging.getLogger(__name__)

LOCAL_BUNDLE = "LocalDagBundle"
#: What a pipelines loader DAG file calls (see `altcraft.pipelines.dag_folder.DAG_FILES`).
LOADER_CALL = "load_pipelines("


def declared_dag_ids(source: str) -> set[str]:
    """The DAG ids a Python file declares with literals: ``DAG("id")`` and ``DAG(dag_id="id")`` (also as
    ``module.DAG``), and each ``@dag``-decorated function (its name, or the decorator's id). Ids built at run
    time are not seen. A file that does not compile declares none (Airflow reports it as its import error).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    ids: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _named(node.func, "DAG"):
            ids.add(_literal(_id_argument(node)))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if _named(decorator, "dag"):
                    ids.add(node.name)
                elif isinstance(decorator, ast.Call) and _named(decorator.func, "dag"):
                    given = _id_argument(decorator)
                    ids.add(node.name if given is None else _literal(given) or node.name)
    ids.discard(None)
    return ids  # type: ignore[return-value]


def _named(node: ast.expr, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (
        isinstance(node, ast.Attribute) and node.attr == name
    )


def _id_argument(call: ast.Call) -> ast.expr | None:
    """What a ``DAG(...)`` or ``dag(...)`` call gives as the DAG id: its first argument or ``dag_id``."""
    if call.args:
        return call.args[0]
    return next((keyword.value for keyword in call.keywords if keyword.arg == "dag_id"), None)


def _literal(node: ast.expr | None) -> str | None:
    """The text of a string literal; None for anything else (``""`` stays: a ``@dag`` then takes the name)."""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def dag_roots(specs_folder: Path) -> list[Path]:
    """Where Airflow finds DAG files beside the pipelines of ``specs_folder``: the folder of their DAG
    files, every local DAG bundle configured and, when loaded, Airflow's example DAGs."""
    from airflow.sdk import conf

    roots = [specs_folder.parent]
    for bundle in conf.getjson("dag_processor", "dag_bundle_config_list", fallback=None) or []:
        if isinstance(bundle, dict) and str(bundle.get("classpath", "")).endswith(LOCAL_BUNDLE):
            kwargs = bundle.get("kwargs") or {}
            roots.append(Path(kwargs.get("path") or conf.get("core", "dags_folder")))
    if conf.getboolean("core", "load_examples", fallback=False):
        from airflow import example_dags

        roots.extend(Path(path) for path in example_dags.__path__)
    return roots


def dag_files(roots: Collection[Path]) -> Iterator[Path]:
    """The Python DAG files Airflow lists under ``roots`` (``.airflowignore``, safe mode), each once."""
    from airflow.utils.file import list_py_file_paths

    seen: set[Path] = set()
    for root in roots:
        try:
            names = list_py_file_paths(root)
        except Exception as error:  # a link loop: Airflow's own listing of that folder fails alike
            log.warning("DAG ids shared with DAG files in %s not checked: cannot list them: %s", root, error)
            continue
        for name in names:
            path = Path(name)
            if path.suffix == ".py" and path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def other_dags(specs_folder: Path, ids: Collection[str]) -> dict[str, list[str]]:
    """For each of ``ids`` (the DAG ids of ``specs_folder``'s specs) declared by another DAG file or by a
    spec of another pipelines folder, those files, named from the folder of the pipelines' DAG files.

    A check beside the pipelines: when the search itself fails (a setting it cannot read, say), it is
    logged and nothing is found, so the pipelines load as they would without it."""
    if not ids:
        return {}
    try:
        return _declared_elsewhere(specs_folder, ids)
    except Exception as error:
        log.warning(
            "DAG ids of the pipelines in %s not checked against other DAG files: %s: %s",
            specs_folder,
            type(error).__name__,
            error,
        )
        return {}


def _declared_elsewhere(specs_folder: Path, ids: Collection[str]) -> dict[str, list[str]]:
    from altcraft.pipelines.factory import find_specs
    from altcraft.pipelines.spec import PipelineSpec, read_spec

    mentioned = re.compile("|".join(map(re.escape, ids)))
    own = specs_folder.resolve()
    found: dict[str, list[str]] = {}
    for path in dag_files(dag_roots(specs_folder)):
        text = _text(path)
        declared: list[tuple[str, Path]] = []
        specs = path.parent / SPECS_FOLDER
        if LOADER_CALL in text and specs.is_dir() and specs.resolve() != own:
            for spec_path in find_specs(specs):
                spec = read_spec(spec_path) if isinstance(spec_path, Path) else None
                if isinstance(spec, PipelineSpec):
                    declared.append((spec.id, spec_path))
        if mentioned.search(text):
            declared.extend((dag_id, path) for dag_id in declared_dag_ids(text))
        for dag_id, where in declared:
            if dag_id in ids:
                found.setdefault(dag_id, []).append(_shown(where, specs_folder.parent))
    return found


def _text(path: Path) -> str:
    """A DAG file's text; empty when it cannot be read (Airflow reports that file itself)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _shown(path: Path, home: Path) -> str:
    """``path`` relative to ``home`` (the folder of the pipelines' DAG files) when in it, else whole."""
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)
