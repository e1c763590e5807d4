"""The UUCall document itself (``tests/fixtures/uucall/uucall_rest_api.txt``, a verbatim copy of
seed 000), read into its operations (section 2) and models (section 3), so the tests hold the
client, the commands and the simulator against the document rather than against a transcript.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parents[1] / "fixtures" / "uucall" / "uucall_rest_api.txt"
LOCATIONS = {"查询参数": "query", "路径参数": "path", "输入参数": "body"}
REQUIRED = {"true": True, "ture": True, "false": False}  # "ture": the document's typo (2.1.2)


@dataclass(frozen=True)
class Param:
    location: str  # query | path | body
    name: str
    required: bool
    type: str


@dataclass
class Operation:
    method: str
    path: str
    params: list[Param] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    model: str | None = None  # the 200 answer's model

    def names(self, location: str) -> set[str]:
        return {p.name for p in self.params if p.location == location}


@dataclass(frozen=True)
class ModelField:
    name: str
    required: bool
    type: str  # string | integer (int64) | number (double)


def _lines() -> list[str]:
    return [line.strip() for line in DOCUMENT.read_text(encoding="utf-8").splitlines()]


@cache
def operations() -> list[Operation]:
    lines = _lines()
    start = lines.index("2. 路径")
    end = lines.index("3. Definitions")
    ops: list[Operation] = []
    section = ""
    tokens: list[str] = []
    for line in lines[start:end]:
        heading = re.match(r"^2\.\d+\.(\d+)\. ", line)
        found = re.match(r"^<span[^>]*>(GET|POST|PUT|DELETE) (\S+)</span>$", line)
        if found:
            ops.append(Operation(found.group(1), found.group(2)))
            continue
        if heading:
            _flush(ops, section, tokens)
            section, tokens = heading.group(1), []
            continue
        if line and not line.startswith("<colgroup>"):
            tokens.append(line)
    _flush(ops, section, tokens)
    return ops


def _flush(ops: list[Operation], section: str, tokens: list[str]) -> None:
    if not ops:
        return
    op = ops[-1]
    if section == "2" and "默认值" in tokens:  # 参数列表
        rows = tokens[tokens.index("默认值") + 1 :]
        i = 0
        while i < len(rows):
            location = LOCATIONS[rows[i]]
            name = rows[i + 1]
            j = i + 2
            while rows[j] not in REQUIRED:
                j += 1
            op.params.append(Param(location, name, REQUIRED[rows[j]], _type(rows[j + 1])))
            i = j + 2
    if section == "3" and "数据类型" in tokens:  # 响应
        rows = tokens[tokens.index("数据类型") + 1 :]
        for i in range(0, len(rows), 3):
            code = int(rows[i])
            op.codes.append(code)
            if code == 200 and rows[i + 2] != "No Content":
                op.model = _type(rows[i + 2])


def _type(text: str) -> str:
    linked = re.match(r"^<a [^>]*>(\w+)</a>$", text)
    return linked.group(1) if linked else text


@cache
def models() -> dict[str, list[ModelField]]:
    lines = [line for line in _lines()[_lines().index("3. Definitions") + 1 :] if line]
    found: dict[str, list[ModelField]] = {}
    name = ""
    rows: list[str] = []
    for line in [*lines, "3.99. END"]:
        heading = re.match(r"^3\.\d+\. (\w+)$", line)
        if heading:
            if name:
                found[name] = _fields(rows)
            name, rows = heading.group(1), []
            continue
        rows.append(line)
    return found


def _fields(rows: list[str]) -> list[ModelField]:
    rows = rows[rows.index("默认值") + 1 :]
    fields: list[ModelField] = []
    i = 0
    while i < len(rows):
        name = rows[i]
        j = i + 1
        while j < len(rows) and rows[j] not in REQUIRED:
            j += 1
        if j + 1 >= len(rows):  # the export is cut off here (RuleRate.chargeUnit)
            if j < len(rows):
                fields.append(ModelField(name, REQUIRED[rows[j]], "string"))
            break
        fields.append(ModelField(name, REQUIRED[rows[j]], rows[j + 1]))
        i = j + 2
    return fields
