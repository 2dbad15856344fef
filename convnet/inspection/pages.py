"""HTML pages from Jinja2 templates: the run report today, the explorer's pages later.

The templates live in `convnet/inspection/templates/` (shipped with the package): `base.html` is the layout
every page extends (blocks `title`, `style`, `intro`, `nav`, `content`), `style.css` its inline style
sheet, `macros.html` the shared pieces (a table, an embedded image). Autoescape is on for `.html`
templates, so every value a page shows (run names, settings, paths, class names) is HTML-escaped; only
`markupsafe.Markup` passes through as markup.

    >>> print(render_string('{% from "macros.html" import table %}{{ table(t) }}',
    ...                     t=table(["Name"], [["<b>"]])).strip())
    <table><thead><tr><th>Name</th></tr></thead><tbody>
    <tr><td>&lt;b&gt;</td></tr>
    </tbody></table>
"""
from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from typing import Any

import jinja2

__all__ = ["environment", "render", "render_string", "table", "png_data_uri"]


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one Jinja2 environment over the package's templates: autoescaped, and strict (an undefined
    variable is an error, not an empty string)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("convnet.inspection", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(template: str, **context: Any) -> str:
    """The page that `template` (a name under templates/, e.g. "report.html") makes of `context`."""
    return environment().get_template(template).render(**context)


def render_string(source: str, **context: Any) -> str:
    """Like `render`, for a template given as text (autoescaped as an .html template)."""
    return environment().from_string(source).render(**context)


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] = (),
          total: Sequence[Any] | None = None) -> dict[str, Any]:
    """A table for the `table` macro of macros.html: `numeric` flags the right-aligned columns (the others
    default to False); `total` is an emphasised last row."""
    flags = [bool(flag) for flag in numeric] + [False] * (len(headers) - len(numeric))
    return {"headers": list(headers), "rows": [list(row) for row in rows], "numeric": flags,
            "total": None if total is None else list(total)}


def png_data_uri(path: str) -> str:
    """The PNG file at `path` as a `data:image/png;base64,...` URI, so that a page embeds it."""
    with open(path, "rb") as stream:
        return "data:image/png;base64," + base64.b64encode(stream.read()).decode("ascii")
