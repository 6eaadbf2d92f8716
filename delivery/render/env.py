"""The Jinja environment every rendered document goes through.

Templates come only from the templates folder. Supporter text is only ever passed in
as a value and escaped on output: it is never compiled as a template.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from delivery.errors import RenderError

PLAIN_TEXT_SUFFIX = ".txt.j2"


def autoescape_for(name: str | None) -> bool:
    """Escape HTML in every template except plain-text ones (``*.txt.j2``)."""
    return not (name or "").endswith(PLAIN_TEXT_SUFFIX)


def make_environment(templates: Path) -> SandboxedEnvironment:
    """A sandboxed environment loading from ``templates`` only.

    One environment per folder is kept for the life of the process, so each template is
    compiled once; a template file edited meanwhile is noticed and compiled again.
    """
    if not templates.is_dir():
        raise RenderError(f"{templates}: templates folder not found")
    return _environment(templates.resolve())


@functools.lru_cache(maxsize=16)
def _environment(templates: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(templates),
        autoescape=autoescape_for,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )


def _template_line(tb: TracebackType | None, root: str, fallback: str) -> tuple[str, int | None]:
    """The innermost traceback frame that runs a template file under ``root``."""
    where: tuple[str, int | None] = (fallback, None)
    prefix = os.path.join(root, "")
    while tb is not None:
        code_file = tb.tb_frame.f_code.co_filename
        if root and code_file.startswith(prefix):
            where = (code_file, tb.tb_lineno)
        tb = tb.tb_next
    return where


def _describe(error: jinja2.TemplateError, name: str, env: jinja2.Environment) -> str:
    if isinstance(error, jinja2.TemplateNotFound):
        return f"{name}: template not found ({error.message})"
    if isinstance(error, jinja2.TemplateSyntaxError):
        path = error.filename or error.name or name
        return f"{path}:{error.lineno}: {error.message}"
    root = ""
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader) and loader.searchpath:
        root = os.path.normpath(loader.searchpath[0])
    fallback = os.path.join(root, name) if root else name
    path, line = _template_line(error.__traceback__, root, fallback)
    location = f"{path}:{line}" if line is not None else path
    return f"{location}: {type(error).__name__}: {error.message}"


def render_template(env: jinja2.Environment, name: str, /, **context: Any) -> str:
    """Render template ``name``; any Jinja error becomes a RenderError naming path and line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateError as error:
        raise RenderError(_describe(error, name, env)) from error
