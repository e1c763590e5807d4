"""MkDocs hook (mkdocs.yml ``hooks``): the code's docstrings use Sphinx roles (``:class:`X```);
the API reference shows them as plain code names."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|data|meth|mod|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)
