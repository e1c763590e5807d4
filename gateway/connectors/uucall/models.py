"""The models of the UUCall document's section 3 ("Definitions"), field for field.

Field names are the document's (``subUserName``, ``contacts_email``, ``notie`` ...); every one
of them is a valid Python name, so none needs an alias. Each model is a tolerant reader of what the
service sends: extra fields are kept (``model_extra``), numbers may come as strings
(``"12345"``) and strings as numbers, a field the document marks required may still be missing
(it is ``None``: what the gateway cannot do without, it checks itself), and ``number
(double)`` fields are read as :class:`~decimal.Decimal` (the client decodes JSON numbers with
a fraction as ``Decimal``, so no amount is ever a float).

``DOC_REQUIRED`` keeps what the document marks "是否必填 true", for the commands that write a
model and for the tests that hold these models against the document. ``RuleRate`` is cut off
in the document after ``chargeUnit`` (the export ends there): its remaining fields, if any,
are read as extras.

Types: ``integer (int64)`` -> ``int``, ``string`` -> ``str``, ``number (double)`` ->
``Decimal``. Times (``createTime``, ``account_time``, ``time``, ...) are int64 epoch values in
an unnamed unit; :func:`epoch` reads seconds or milliseconds by their size.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

#: An epoch value above this is in milliseconds (10^11 s is the year 5138, 10^11 ms is 1973).
_MS_FLOOR: Final = 10**11
_MS_CEILING: Final = 253_402_300_799_000  # 9999-12-31T23:59:59Z
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class DocModel(BaseModel):
    """Base of the document's models: tolerant (see the module docstring)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    #: The document's fields marked required ("是否必填 true"), by their document name.
    DOC_REQUIRED: ClassVar[frozenset[str]] = frozenset()

    def doc(self) -> dict[str, Any]:
        """The record under the document's names, JSON-ready (``Decimal`` as text), extras kept,
        fields the service left out left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class FunRate(DocModel):
    """3.1 功能资费."""

    DOC_REQUIRED = frozenset({"name", "nextRateTime", "chargeUnit"})

    name: str | None = None
    nextRateTime: int | None = None
    chargeUnit: str | None = None


class BaseUser(DocModel):
    """3.2 企业帐号 (no path answers it; kept for completeness)."""

    DOC_REQUIRED = frozenset({"uid", "state", "type", "password", "name"})

    uid: int | None = None
    createTime: int | None = None
    contacts_addr: str | None = None
    contacts_email: str | None = None
    state: int | None = None
    expDate: int | None = None
    type: int | None = None
    password: str | None = Field(default=None, repr=False)
    contacts: str | None = None
    contacts_phone: str | None = None
    name: str | None = None
    permissions_code: int | None = None
    note: str | None = None
    billing_account: int | None = None
    business_ownership: str | None = None


class SubUser(DocModel):
    """3.3 子帐号."""

    DOC_REQUIRED = frozenset({"uid", "state", "password", "id", "createtime", "account"})

    uid: int | None = None
    state: int | None = None
    login_ip: int | None = None
    password: str | None = Field(default=None, repr=False)
    history_online_count: int | None = None
    id: int | None = None
    createtime: int | None = None
    jobnumber: str | None = None
    history_online_time: int | None = None
    login_time: int | None = None
    login_server: str | None = None
    email: str | None = None
    name: str | None = None
    account: str | None = None
    mphone: str | None = None
    dept: str | None = None
    login_version: int | None = None
    bind_ext: int | None = None
    note: str | None = None
    login_os_info: str | None = None


class BillingAccount(DocModel):
    """3.4 计费账户: ``balance``, ``overdraft``, ``advance`` and ``consume`` are money."""

    DOC_REQUIRED = frozenset(
        {"balance", "overdraft", "name", "state", "account", "note", "advance", "consume"}
    )

    balance: int | None = None
    overdraft: int | None = None
    name: str | None = None
    state: int | None = None
    account: int | None = None
    note: str | None = None
    advance: int | None = None
    consume: int | None = None


class CashLog(DocModel):
    """3.5 充值记录: ``money`` is money, ``account_time`` when it was booked."""

    DOC_REQUIRED = frozenset({"id", "account_time", "money", "type"})

    id: int | None = None
    account_time: int | None = None
    money: int | None = None
    type: int | None = None
    note: str | None = None
    serial_number: str | None = None


class GiftRate(DocModel):
    """3.6 时长卡 (``notie`` is the document's spelling)."""

    DOC_REQUIRED = frozenset(
        {
            "id",
            "expirationTime",
            "giftTime",
            "name",
            "state",
            "effectiveTime",
            "ruleGiftTime",
            "notie",
        }
    )

    id: int | None = None
    expirationTime: int | None = None
    giftTime: int | None = None
    name: str | None = None
    state: str | None = None
    effectiveTime: int | None = None
    ruleGiftTime: int | None = None
    notie: str | None = None


class ChargeBill(DocModel):
    """3.7 扣费账单: one sub-account's bill of one month (``time`` = ``yyyy-MM``); the three
    amounts are ``number (double)`` in the document."""

    DOC_REQUIRED = frozenset({"total", "time", "basicBill", "subUserName", "functionBill"})

    total: Decimal | None = None
    time: str | None = None
    basicBill: Decimal | None = None
    subUserName: str | None = None
    functionBill: Decimal | None = None


class HireRate(DocModel):
    """3.8 话务租用."""

    DOC_REQUIRED = frozenset({"name", "nextRateTime", "chargeUnit"})

    name: str | None = None
    nextRateTime: int | None = None
    chargeUnit: str | None = None


class BasicBill(DocModel):
    """3.9 基础消费账单: one day's basic charges (``daily_symbol``, e.g. 20240501)."""

    DOC_REQUIRED = frozenset(
        {
            "total",
            "day_seat",
            "id",
            "daily_symbol",
            "day_callin",
            "day_callout",
            "day_intvoice",
            "day_sms",
        }
    )

    total: int | None = None
    day_seat: int | None = None
    id: int | None = None
    daily_symbol: int | None = None
    day_callin: int | None = None
    day_callout: int | None = None
    day_intvoice: int | None = None
    day_sms: int | None = None


class CustomApplication(DocModel):
    """3.10 应用: an application a role or sub-account may be allowed (``pid``: its parent)."""

    DOC_REQUIRED = frozenset({"uid", "id", "name", "pid"})

    uid: int | None = None
    id: int | None = None
    name: str | None = None
    pid: int | None = None


class OpLogSubUser(DocModel):
    """3.11 操作日志: who (``subUserName``) did what (``opdescribe``) when (``time``)."""

    DOC_REQUIRED = frozenset({"uid", "id", "time", "opdescribe"})

    uid: int | None = None
    id: int | None = None
    time: int | None = None
    opdescribe: str | None = None
    subUserName: str | None = None


class FunBill(DocModel):
    """3.12 功能消费账单: one day's function charges."""

    DOC_REQUIRED = frozenset({"day_account", "id", "daily_symbol", "name"})

    day_account: int | None = None
    id: int | None = None
    daily_symbol: int | None = None
    name: str | None = None


class SubUserRole(DocModel):
    """3.13 子帐号及其角色信息."""

    DOC_REQUIRED = frozenset({"id", "name", "state", "account", "roleName"})

    id: int | None = None
    jobnumber: str | None = None
    name: str | None = None
    state: int | None = None
    account: str | None = None
    roleName: str | None = None


class Notice(DocModel):
    """3.14 公告: ``targets`` are sub-account ids separated by ``,``."""

    DOC_REQUIRED = frozenset({"uid", "createtime", "content", "title", "targets"})

    uid: int | None = None
    createtime: int | None = None
    content: str | None = None
    id: int | None = None
    title: str | None = None
    targets: str | None = None


class Role(DocModel):
    """3.15 角色."""

    DOC_REQUIRED = frozenset({"uid", "id", "level", "name"})

    uid: int | None = None
    id: int | None = None
    level: int | None = None
    name: str | None = None


class RuleRate(DocModel):
    """3.16 基本费率标准 (cut off in the document after ``chargeUnit``)."""

    DOC_REQUIRED = frozenset({"name", "ruleId"})

    name: str | None = None
    ruleId: int | None = None
    chargeUnit: str | None = None


#: Every model of section 3, by its document name.
MODELS: Final[dict[str, type[DocModel]]] = {
    model.__name__: model
    for model in (
        FunRate,
        BaseUser,
        SubUser,
        BillingAccount,
        CashLog,
        GiftRate,
        ChargeBill,
        HireRate,
        BasicBill,
        CustomApplication,
        OpLogSubUser,
        FunBill,
        SubUserRole,
        Notice,
        Role,
        RuleRate,
    )
}


def epoch_ms(value: Any) -> int | None:
    """An int64 time of the document, seconds or milliseconds since the epoch (told apart by
    its size), as integer milliseconds; missing, zero, negative or absurd -> None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(Decimal(str(value).strip()))
    except (ArithmeticError, ValueError):
        return None
    if number <= 0:
        return None
    ms = number if number >= _MS_FLOOR else number * 1000
    return ms if ms <= _MS_CEILING else None


def epoch(value: Any) -> datetime | None:
    """:func:`epoch_ms` as an aware UTC datetime (exact to the millisecond)."""
    ms = epoch_ms(value)
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)
