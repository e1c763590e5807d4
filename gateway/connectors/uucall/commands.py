"""UUCall commands: one model per operation of the document (seed 000, section 2), 34 in all.

Names are ``uucall.<resource>.<action>``; resources follow the document's paths (``notice``,
``role``, ``role_auth``, ``roleuser``, ``subuser``, ``subuser_auth``, ``cashlog``,
``chargebill``, ``basicbill``, ``funbill``, ``account``, ``baserate``, ``funrate``,
``giftrate``, ``hirerate``, ``oplog``); actions are ``list`` (many records), ``get`` (one),
``create`` (``POST``), ``update`` (``PUT``), ``delete`` (``DELETE``) and ``download`` (a bill
file). :data:`ENDPOINTS` is the table command -> ``METHOD path``.

Argument names are the document's parameter names (``subUserName``, ``noticeId``,
``authAppIds`` ...) and are checked before any request: ids are int64 digits, months
``yyyy-MM``, times ``yyyy-MM-dd HH:mm:ss``, unknown fields are errors. The enterprise is never
an argument: ``uid`` (path, query or body, where the document puts it) and ``uidName`` come
from the PBX's settings, so a command cannot reach another enterprise.

Writes send only the fields given (and the ids the document's model carries): an ``update``
changes what it names. ``notice.create`` sends ``createtime`` as now in milliseconds unless
given (the document requires it and does not say who sets it).

Lists: paged operations (``cashlog``, ``chargebill``, ``basicbill``, ``funbill``, ``giftrate``,
``roleuser``) read every page unless the command names a ``page``; the others answer in one
request. Records are read through the section 3 models (numbers sent as strings become
numbers; ``ChargeBill``'s doubles become exact decimal strings) and keep the document's field
names and any extra field.

Downloads (``chargebill.download``, ``basicbill.download``, ``funbill.download``) are written
under the PBX's ``download_dir`` (see ``downloads.py``); no argument can name a path outside it.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    model_validator,
)

from gateway.connectors.fields import MAX_INT
from gateway.connectors.uucall.client import Method, UucallClient, record, rows
from gateway.connectors.uucall.downloads import Downloads
from gateway.connectors.uucall.models import (
    BasicBill,
    BillingAccount,
    CashLog,
    ChargeBill,
    CustomApplication,
    DocModel,
    FunBill,
    FunRate,
    GiftRate,
    HireRate,
    Notice,
    OpLogSubUser,
    Role,
    RuleRate,
    SubUser,
    SubUserRole,
)
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.schema.commands import (
    CommandArgs,
    CommandFailed,
    CommandModel,
    ErrorCode,
    command_name,
)

# --- field types ---------------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an id (digits), not a boolean")
    return value


def _stamp(value: str) -> str:
    datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # a real date and time, or ValueError
    return value


def _safe(value: str) -> str:
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


def _id_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


#: An int64 id of the document (given as digits or a number).
Id64 = Annotated[int, Field(ge=1, le=MAX_INT), BeforeValidator(_no_bool)]
#: ``yyyy-MM`` (统计时间 of the bills).
Month = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
#: ``yyyy-MM-dd HH:mm:ss`` (the oplog's startTime / endTime).
Stamp = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"),
    AfterValidator(_stamp),
]
#: An account or person name: no slash, backslash, control character or ``..`` (names may end
#: up in a download's file name).
SafeName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f/\\]{1,128}$"),
    AfterValidator(_safe),
]
#: A file name of our own choosing inside ``download_dir``: no directory part at all.
FileName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
    AfterValidator(_safe),
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4096)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
#: "登录密码(长度不超过15个字节)" (2.26.2): at most 15 bytes in UTF-8.
Password = Annotated[str, StringConstraints(min_length=1), AfterValidator(lambda v: _bytes(v, 15))]
IdList = Annotated[list[Id64], Field(min_length=1, max_length=500), BeforeValidator(_id_list)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=256)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9-]{3,32}$")]
#: 子帐号状态: 1 有效, 2 禁用, 3 已注销, 4 冻结 (2.29.2).
SubUserState = Annotated[int, Field(ge=1, le=4), BeforeValidator(_no_bool)]
Level = Annotated[int, Field(ge=0, le=99), BeforeValidator(_no_bool)]
Epoch = Annotated[int, Field(ge=0, le=MAX_INT), BeforeValidator(_no_bool)]


def _bytes(value: str, limit: int) -> str:
    if len(value.encode()) > limit:
        raise ValueError(f"at most {limit} bytes (UTF-8)")
    return value


# --- args ----------------------------------------------------------------------------------------

#: Args fields that are never sent as such.
_NOT_SENT: Final = frozenset({"deadline", "page", "page_size", "file_name"})


class UucallArgs(CommandArgs):
    """Args of one operation: ``PATH`` fields fill the path, ``BODY`` fields the JSON body,
    the rest (when given) the query string, as the document places them."""

    PATH: ClassVar[tuple[str, ...]] = ()
    BODY: ClassVar[tuple[str, ...]] = ()

    def path_values(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.PATH}

    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self:
            if name in _NOT_SENT or name in self.PATH or name in self.BODY or value is None:
                continue
            out[name] = _query_value(value)
        return out

    def body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.BODY if getattr(self, name) is not None}


def _query_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "2"  # roleEnble: "1.是 2.否" (2.26.2)
    return str(value)


class UpdateArgs(UucallArgs):
    """An update of the object its one ``PATH`` field names: it must change something, and the
    body repeats that id as ``id`` (the document's models carry it)."""

    @model_validator(mode="after")
    def _some(self) -> Self:
        key = self.PATH[0]
        if not any(
            getattr(self, name) is not None
            for name in type(self).model_fields
            if name not in (key, "deadline")
        ):
            raise ValueError(f"nothing to change: give at least one field besides {key}")
        return self

    def body(self) -> dict[str, Any]:
        return {"id": getattr(self, self.PATH[0]), **super().body()}


class NoArgs(UucallArgs):
    """Nothing but the enterprise, which comes from the settings."""


class PageArgs(UucallArgs):
    """A paged list: every page, or only ``page`` when given; ``page_size`` rows a request."""

    page: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=None, description="Only this page; default: every page"
    )
    page_size: Annotated[int, Field(strict=True, ge=1, le=1000)] = 100


# account ------------------------------------------------------------------------------------------


class ChargeBillListArgs(PageArgs):
    """2.2: ``account`` (a sub-account name) and ``time`` filter."""

    account: SafeName | None = None
    time: Month | None = None


class DetailBillListArgs(PageArgs):
    """2.3 / 2.4: one sub-account's daily basic or function charges of a month."""

    subUserName: SafeName
    time: Month | None = None


class ChargeBillDownloadArgs(UucallArgs):
    """2.5: the charge bill file; ``file_name`` (optional) names it inside ``download_dir``."""

    time: Month | None = None
    account: SafeName | None = None
    file_name: FileName | None = None


class DetailBillDownloadArgs(UucallArgs):
    """2.6 / 2.7: one sub-account's basic or function bill file."""

    subUserName: SafeName
    time: Month | None = None
    file_name: FileName | None = None


# notices ------------------------------------------------------------------------------------------


class NoticeListArgs(UucallArgs):
    """2.13: ``id`` and ``title`` filter."""

    id: Id64 | None = None
    title: Title | None = None


class NoticeIdArgs(UucallArgs):
    PATH = ("noticeId",)

    noticeId: Id64


class NoticeCreateArgs(UucallArgs):
    """2.14: body ``Notice``; ``targets`` are sub-account ids (sent as ``"1,2"``)."""

    BODY = ("title", "content", "targets", "createtime")

    title: Title
    content: Annotated[str, StringConstraints(min_length=1, max_length=65_536)]
    targets: IdList
    createtime: Epoch | None = Field(default=None, description="default: now, in milliseconds")

    def body(self) -> dict[str, Any]:
        out = super().body()
        out["targets"] = ",".join(str(t) for t in self.targets)
        out.setdefault("createtime", int(time.time() * 1000))
        return out


class NoticeUpdateArgs(UpdateArgs):
    """2.16: the fields given go in the body ``Notice`` (with its ``id``)."""

    PATH = ("noticeId",)
    BODY = ("title", "content", "targets")

    noticeId: Id64
    title: Title | None = None
    content: Annotated[str, StringConstraints(min_length=1, max_length=65_536)] | None = None
    targets: IdList | None = None

    def body(self) -> dict[str, Any]:
        out = super().body()
        if self.targets is not None:
            out["targets"] = ",".join(str(t) for t in self.targets)
        return out


# operation log -----------------------------------------------------------------------------------


class OplogListArgs(UucallArgs):
    """2.18: every filter of the document; times in the service's wall clock."""

    subUserName: SafeName | None = None
    startTime: Stamp | None = None
    endTime: Stamp | None = None
    id: Id64 | None = None

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.startTime and self.endTime and self.endTime < self.startTime:
            raise ValueError("endTime is before startTime")
        return self


# roles --------------------------------------------------------------------------------------------


class RoleListArgs(UucallArgs):
    name: SafeName | None = None


class RoleCreateArgs(UucallArgs):
    """2.20: ``name`` in the query (required) and in the body ``Role`` with ``level``."""

    BODY = ("level",)

    name: SafeName
    level: Level | None = None

    def body(self) -> dict[str, Any]:
        return {"name": self.name, **super().body()}


class RoleIdArgs(UucallArgs):
    PATH = ("roleId",)

    roleId: Id64


class RoleUpdateArgs(UpdateArgs):
    """2.23: body ``Role`` with the fields given (and its ``id``)."""

    PATH = ("roleId",)
    BODY = ("name", "level")

    roleId: Id64
    name: SafeName | None = None
    level: Level | None = None


class AppAuthArgs(UucallArgs):
    """2.22 / 2.31: applications to allow and to deny (ids, sent as ``"1,2"``)."""

    authAppIds: IdList | None = None
    unAuthAppIds: IdList | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.authAppIds is None and self.unAuthAppIds is None:
            raise ValueError("give authAppIds, unAuthAppIds or both")
        both = set(self.authAppIds or ()) & set(self.unAuthAppIds or ())
        if both:
            raise ValueError(f"allowed and denied at once: {sorted(both)}")
        return self


class RoleAuthUpdateArgs(AppAuthArgs):
    PATH = ("roleId",)

    roleId: Id64


# sub-accounts -------------------------------------------------------------------------------------


class RoleUserListArgs(PageArgs):
    """2.25: every filter of the document."""

    name: SafeName | None = None
    subUserName: SafeName | None = None
    roleName: SafeName | None = None
    jobnumber: SafeName | None = None
    state: SubUserState | None = None


class RoleUserCreateArgs(UucallArgs):
    """2.26: the account, name and password travel in the query (as documented), the body
    ``SubUserRole`` repeats what it has of them; ``roleEnble`` applies the role's permissions."""

    BODY = ("roleName", "state")

    account: SafeName
    name: SafeName
    password: Password = Field(repr=False)
    jobnumber: SafeName | None = None
    roleId: Id64 | None = None
    roleEnble: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, description="apply the role's permission template (sent 1 / 2)"
    )
    roleName: SafeName | None = None
    state: SubUserState | None = None

    def body(self) -> dict[str, Any]:
        out = {"account": self.account, "name": self.name}
        if self.jobnumber is not None:
            out["jobnumber"] = self.jobnumber
        return {**out, **super().body()}


class SubUserIdArgs(UucallArgs):
    PATH = ("subUserId",)

    subUserId: Id64


class RoleUserUpdateArgs(UpdateArgs):
    """2.28: body ``SubUserRole`` with the fields given (and its ``id``)."""

    PATH = ("subUserId",)
    BODY = ("account", "name", "jobnumber", "state", "roleName")

    subUserId: Id64
    account: SafeName | None = None
    name: SafeName | None = None
    jobnumber: SafeName | None = None
    state: SubUserState | None = None
    roleName: SafeName | None = None


class SubUserListArgs(UucallArgs):
    """2.29: every filter of the document."""

    name: SafeName | None = None
    id: Id64 | None = None
    bind_ext: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")] | None = None
    jobnumber: SafeName | None = None
    account: SafeName | None = None
    state: SubUserState | None = None


class SubUserUpdateArgs(UpdateArgs):
    """2.33: body ``SubUser`` with the fields given (and its ``id``)."""

    PATH = ("subUserId",)
    BODY = (
        "name",
        "email",
        "mphone",
        "dept",
        "jobnumber",
        "note",
        "bind_ext",
        "state",
        "password",
    )

    subUserId: Id64
    name: SafeName | None = None
    email: Email | None = None
    mphone: Phone | None = None
    dept: SafeName | None = None
    jobnumber: SafeName | None = None
    note: Text | None = None
    bind_ext: Id64 | None = None
    state: SubUserState | None = None
    password: Password | None = Field(default=None, repr=False)


class SubUserAuthGetArgs(SubUserIdArgs):
    """2.30: ``pid`` keeps the applications under one parent."""

    pid: Annotated[int, Field(ge=0, le=MAX_INT), BeforeValidator(_no_bool)] | None = None


class SubUserAuthUpdateArgs(AppAuthArgs):
    PATH = ("subUserId",)

    subUserId: Id64


# --- the commands --------------------------------------------------------------------------------

#: ``page``: a paged list; ``rows``: a list in one answer; ``record``: one object; ``write``:
#: no content expected; ``download``: a file written under ``download_dir``.
AnswerKind = Literal["page", "rows", "record", "write", "download"]


class UucallCommand(CommandModel):
    """One operation of the document: ``METHOD path``, how it answers, the model of its
    records and where the enterprise goes (``uid`` in the query or body, ``uidName``)."""

    method: ClassVar[Method]
    path: ClassVar[str]
    answer: ClassVar[AnswerKind]
    model: ClassVar[type[DocModel] | None] = None
    uid_query: ClassVar[bool] = False
    uid_body: ClassVar[bool] = False
    uid_name: ClassVar[bool] = False
    #: The document gives the operation a JSON body (输入参数 ``body``).
    takes_body: ClassVar[bool] = False

    args: UucallArgs

    @classmethod
    def endpoint(cls) -> str:
        return f"{cls.method} {cls.path}"


class CashlogList(UucallCommand):
    method = "GET"
    path = "/account/cashlog"
    answer = "page"
    model = CashLog
    uid_query = True
    command: Literal["uucall.cashlog.list"]
    args: PageArgs


class ChargebillList(UucallCommand):
    method = "GET"
    path = "/account/chargebill"
    answer = "page"
    model = ChargeBill
    uid_name = True
    command: Literal["uucall.chargebill.list"]
    args: ChargeBillListArgs


class BasicbillList(UucallCommand):
    method = "GET"
    path = "/account/chargebill/basicbill"
    answer = "page"
    model = BasicBill
    uid_name = True
    command: Literal["uucall.basicbill.list"]
    args: DetailBillListArgs


class FunbillList(UucallCommand):
    method = "GET"
    path = "/account/chargebill/funbill"
    answer = "page"
    model = FunBill
    uid_name = True
    command: Literal["uucall.funbill.list"]
    args: DetailBillListArgs


class ChargebillDownload(UucallCommand):
    method = "GET"
    path = "/account/file/chargebill"
    answer = "download"
    uid_name = True
    command: Literal["uucall.chargebill.download"]
    args: ChargeBillDownloadArgs


class BasicbillDownload(UucallCommand):
    method = "GET"
    path = "/account/file/chargebill/basicbill"
    answer = "download"
    uid_name = True
    command: Literal["uucall.basicbill.download"]
    args: DetailBillDownloadArgs


class FunbillDownload(UucallCommand):
    method = "GET"
    path = "/account/file/chargebill/funbill"
    answer = "download"
    uid_name = True
    command: Literal["uucall.funbill.download"]
    args: DetailBillDownloadArgs


class AccountGet(UucallCommand):
    method = "GET"
    path = "/account/{uid}"
    answer = "record"
    model = BillingAccount
    command: Literal["uucall.account.get"]
    args: NoArgs


class BaserateGet(UucallCommand):
    """2.9 lists ``uid`` as a query parameter although the path holds it: both are sent."""

    method = "GET"
    path = "/account/{uid}/baserate"
    answer = "rows"
    model = RuleRate
    uid_query = True
    command: Literal["uucall.baserate.get"]
    args: NoArgs


class FunrateGet(UucallCommand):
    method = "GET"
    path = "/account/{uid}/funrate"
    answer = "rows"
    model = FunRate
    uid_query = True
    command: Literal["uucall.funrate.get"]
    args: NoArgs


class GiftrateList(UucallCommand):
    method = "GET"
    path = "/account/{uid}/giftrate"
    answer = "page"
    model = GiftRate
    command: Literal["uucall.giftrate.list"]
    args: PageArgs


class HirerateGet(UucallCommand):
    method = "GET"
    path = "/account/{uid}/hirerate"
    answer = "rows"
    model = HireRate
    uid_query = True
    command: Literal["uucall.hirerate.get"]
    args: NoArgs


class NoticeList(UucallCommand):
    method = "GET"
    path = "/power/notice"
    answer = "rows"
    model = Notice
    uid_query = True
    command: Literal["uucall.notice.list"]
    args: NoticeListArgs


class NoticeCreate(UucallCommand):
    method = "POST"
    path = "/power/notice"
    answer = "write"
    uid_body = True
    takes_body = True
    command: Literal["uucall.notice.create"]
    args: NoticeCreateArgs


class NoticeGet(UucallCommand):
    method = "GET"
    path = "/power/notice/{noticeId}"
    answer = "record"
    model = Notice
    uid_query = True
    command: Literal["uucall.notice.get"]
    args: NoticeIdArgs


class NoticeUpdate(UucallCommand):
    method = "PUT"
    path = "/power/notice/{noticeId}"
    answer = "write"
    uid_query = True
    uid_body = True
    takes_body = True
    command: Literal["uucall.notice.update"]
    args: NoticeUpdateArgs


class NoticeDelete(UucallCommand):
    method = "DELETE"
    path = "/power/notice/{noticeId}"
    answer = "write"
    uid_query = True
    command: Literal["uucall.notice.delete"]
    args: NoticeIdArgs


class OplogList(UucallCommand):
    method = "GET"
    path = "/power/oplog"
    answer = "rows"
    model = OpLogSubUser
    uid_query = True
    command: Literal["uucall.oplog.list"]
    args: OplogListArgs


class RoleList(UucallCommand):
    method = "GET"
    path = "/power/role"
    answer = "rows"
    model = Role
    uid_query = True
    command: Literal["uucall.role.list"]
    args: RoleListArgs


class RoleCreate(UucallCommand):
    method = "POST"
    path = "/power/role"
    answer = "write"
    uid_query = True
    uid_body = True
    takes_body = True
    command: Literal["uucall.role.create"]
    args: RoleCreateArgs


class RoleUpdate(UucallCommand):
    method = "PUT"
    path = "/power/role/{roleId}"
    answer = "write"
    uid_body = True
    takes_body = True
    command: Literal["uucall.role.update"]
    args: RoleUpdateArgs


class RoleDelete(UucallCommand):
    method = "DELETE"
    path = "/power/role/{roleId}"
    answer = "write"
    command: Literal["uucall.role.delete"]
    args: RoleIdArgs


class RoleAuthGet(UucallCommand):
    method = "GET"
    path = "/power/role/auth/{roleId}"
    answer = "rows"
    model = CustomApplication
    uid_query = True
    command: Literal["uucall.role_auth.get"]
    args: RoleIdArgs


class RoleAuthUpdate(UucallCommand):
    method = "PUT"
    path = "/power/role/auth/{roleId}"
    answer = "write"
    command: Literal["uucall.role_auth.update"]
    args: RoleAuthUpdateArgs


class RoleUserList(UucallCommand):
    method = "GET"
    path = "/power/roleuser"
    answer = "page"
    model = SubUserRole
    uid_query = True
    command: Literal["uucall.roleuser.list"]
    args: RoleUserListArgs


class RoleUserCreate(UucallCommand):
    method = "POST"
    path = "/power/roleuser"
    answer = "write"
    takes_body = True
    command: Literal["uucall.roleuser.create"]
    args: RoleUserCreateArgs


class RoleUserGet(UucallCommand):
    method = "GET"
    path = "/power/roleuser/{subUserId}"
    answer = "record"
    model = SubUserRole
    command: Literal["uucall.roleuser.get"]
    args: SubUserIdArgs


class RoleUserUpdate(UucallCommand):
    method = "PUT"
    path = "/power/roleuser/{subUserId}"
    answer = "write"
    takes_body = True
    command: Literal["uucall.roleuser.update"]
    args: RoleUserUpdateArgs


class SubUserList(UucallCommand):
    method = "GET"
    path = "/power/subuser"
    answer = "rows"
    model = SubUser
    uid_query = True
    command: Literal["uucall.subuser.list"]
    args: SubUserListArgs


class SubUserGet(UucallCommand):
    method = "GET"
    path = "/power/subuser/{subUserId}"
    answer = "record"
    model = SubUser
    command: Literal["uucall.subuser.get"]
    args: SubUserIdArgs


class SubUserUpdate(UucallCommand):
    method = "PUT"
    path = "/power/subuser/{subUserId}"
    answer = "write"
    uid_body = True
    takes_body = True
    command: Literal["uucall.subuser.update"]
    args: SubUserUpdateArgs


class SubUserDelete(UucallCommand):
    method = "DELETE"
    path = "/power/subuser/{subUserId}"
    answer = "write"
    command: Literal["uucall.subuser.delete"]
    args: SubUserIdArgs


class SubUserAuthGet(UucallCommand):
    method = "GET"
    path = "/power/subuser/auth/{subUserId}"
    answer = "rows"
    model = CustomApplication
    command: Literal["uucall.subuser_auth.get"]
    args: SubUserAuthGetArgs


class SubUserAuthUpdate(UucallCommand):
    method = "PUT"
    path = "/power/subuser/auth/{subUserId}"
    answer = "write"
    command: Literal["uucall.subuser_auth.update"]
    args: SubUserAuthUpdateArgs


#: Every command, in the document's order (section 2), for ``VendorPlugin(command_models=...)``.
COMMAND_MODELS: Final[tuple[type[UucallCommand], ...]] = (
    CashlogList,
    ChargebillList,
    BasicbillList,
    FunbillList,
    ChargebillDownload,
    BasicbillDownload,
    FunbillDownload,
    AccountGet,
    BaserateGet,
    FunrateGet,
    GiftrateList,
    HirerateGet,
    NoticeList,
    NoticeCreate,
    NoticeGet,
    NoticeUpdate,
    NoticeDelete,
    OplogList,
    RoleList,
    RoleCreate,
    RoleAuthGet,
    RoleAuthUpdate,
    RoleUpdate,
    RoleDelete,
    RoleUserList,
    RoleUserCreate,
    RoleUserGet,
    RoleUserUpdate,
    SubUserList,
    SubUserAuthGet,
    SubUserAuthUpdate,
    SubUserGet,
    SubUserUpdate,
    SubUserDelete,
)

#: command name -> ``METHOD path`` (the documentation's command table).
ENDPOINTS: Final[dict[str, str]] = {command_name(m): m.endpoint() for m in COMMAND_MODELS}
#: The names, for ``VendorPlugin(commands=...)``.
COMMAND_NAMES: Final = frozenset(ENDPOINTS)

_PLACEHOLDER: Final = re.compile(r"\{(\w+)\}")


# --- execution -----------------------------------------------------------------------------------


def request_of(
    command: UucallCommand, settings: UucallPbxSettings
) -> tuple[str, dict[str, str], dict[str, Any] | None]:
    """The path (placeholders filled), query and body of a command, enterprise included."""
    args = command.args
    values = {"uid": settings.uid, **args.path_values()}
    path = _PLACEHOLDER.sub(lambda m: values[m.group(1)], command.path)
    query = args.query()
    if command.uid_query:
        query["uid"] = settings.uid
    if command.uid_name:
        query["uidName"] = settings.uid_name
    body: dict[str, Any] | None = None
    if command.takes_body:
        body = args.body()
        if command.uid_body:
            body = {"uid": int(settings.uid), **body}
    return path, query, body


async def execute_rest(
    client: UucallClient,
    settings: UucallPbxSettings,
    command: CommandModel,
    downloads: Downloads | None,
) -> dict[str, Any]:
    """Run one command: its request, its answer as a result dict."""
    if not isinstance(command, UucallCommand):
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"not a UUCall command: {command.command!r}")
    path, query, body = request_of(command, settings)
    args = command.args
    if command.answer == "download":
        if downloads is None:
            raise CommandFailed(ErrorCode.UNSUPPORTED, "no download_dir is configured for this PBX")
        name = getattr(args, "file_name", None) or _file_stem(command, query)
        where = command.endpoint()
        async with client.stream(path, query) as response:
            return await downloads.save(
                response,
                name,
                explicit=bool(getattr(args, "file_name", None)),
                check=lambda raw: client.check_download(where, raw),
            )
    if command.answer == "page" and isinstance(args, PageArgs):
        if args.page is None:
            found = await client.list_all(path, query, page_size=args.page_size)
            data = _records(command, found)
            return {"data": data, "row_count": len(data)}
        answer = await client.get(
            path, {**query, "page": str(args.page), "pageSize": str(args.page_size)}
        )
        data = _records(command, rows(answer))
        return {"data": data, "page": args.page, "page_size": args.page_size}
    if command.answer == "rows":
        data = _records(command, rows(await client.get(path, query)))
        return {"data": data, "row_count": len(data)}
    if command.answer == "record":
        found_record = record(await client.get(path, query))
        if found_record is None:
            raise CommandFailed(ErrorCode.NOT_FOUND, f"{command.endpoint()}: empty answer")
        return _records(command, [found_record])[0]
    answer = await client.request(command.method, path, query, body)
    result: dict[str, Any] = {"status": answer.status, **args.path_values()}
    if answer.body is not None:
        result["answer"] = _jsonable(answer.body)
    return result


def _records(command: UucallCommand, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows read through the command's model: document names, numbers as numbers, decimals as
    exact text, extras kept."""
    model = command.model
    if model is None:
        return [_jsonable(row) for row in found]
    return [model.model_validate(row).doc() for row in found]


def _jsonable(value: Any) -> Any:
    """Decoded JSON with its ``Decimal`` numbers as exact text (never floats)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | str | bool) or value is None:
        return value
    return format(value, "f") if hasattr(value, "as_tuple") else str(value)


def _file_stem(command: UucallCommand, query: dict[str, str]) -> str:
    """``chargebill_2024-05`` / ``basicbill_agent01_2024-05``: from the operation and its
    (validated) arguments; :class:`Downloads` adds the extension and makes it a safe name."""
    kind = command.path.rsplit("/", 1)[-1]
    parts = [kind, query.get("subUserName") or query.get("account") or "", query.get("time", "")]
    return "_".join(p for p in parts if p)
