"""UUCall polled records -> ``account.*`` events. PURE: no I/O, no clock reads.

UUCall pushes nothing; the connector polls (``pollers.py``) and hands each polled fact to this
normalizer as one **raw message**: a JSON object naming the path it was read from, the
enterprise, the settings the reading depends on, and the record (with the record it replaces,
where the fact is a change)::

    {"path": "/account/{uid}", "uid": "10001", "minor_unit": 100, "threshold": 20000,
     "previous": {<BillingAccount>} | null, "record": {<BillingAccount>}}
    {"path": "/account/cashlog", "uid": "10001", "minor_unit": 100, "record": {<CashLog>}}
    {"path": "/account/chargebill", "uid": "10001", "minor_unit": 100, "month": "2024-05",
     "previous": {<ChargeBill>} | null, "record": {<ChargeBill>}}
    {"path": "/power/oplog", "uid": "10001", "record": {<OpLogSubUser>}}
    {"path": "/power/notice", "uid": "10001", "previous": {<Notice>} | null,
     "record": {<Notice>} | null}

``minor_unit`` defaults to 100; without ``threshold`` no ``account.low_balance`` is decided.
``tests/fixtures/uucall/sample.jsonl`` holds such messages (``gateway normalize --vendor
uucall`` reads them), and the connector publishes exactly what this module makes of them.

Ids derive from the fact, never from when it was seen, so two instances, a restart or a
re-read after a lost cursor publish the same fact under the same id:

* ``account.balance_changed`` / ``account.low_balance``: the enterprise and the state the
  account reached (its money fields and state). ``consume`` only grows, so the account does
  not reach the same state twice in practice; an instance that lost the cursor and sees the
  account again names it alike.
* ``account.recharged``: the cash log entry's ``id``; ``account.audit``: the oplog entry's id.
* ``account.bill``: month, sub-account and the three amounts (a month's bill only grows).
* ``account.notice``: the notice id, the action and the content before and after.

A message that is not such an object, or lacks what its fact needs (an id, a balance),
becomes ``gateway.rejected``; an unknown ``path`` becomes ``vendor.unknown``. Nothing raises.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pydantic import ValidationError

from gateway.connectors.fields import canonical, safe_text
from gateway.connectors.uucall.client import decode_json
from gateway.connectors.uucall.models import (
    BillingAccount,
    CashLog,
    ChargeBill,
    Notice,
    OpLogSubUser,
    epoch,
)
from gateway.schema.events import (
    AccountAuditData,
    AccountBalanceChangedData,
    AccountBillData,
    AccountLowBalanceData,
    AccountNoticeData,
    AccountRechargedData,
    CloudEvent,
    DecimalMoney,
    Money,
    NormalizeContext,
    VendorUnknownData,
    make_event,
    rejected,
)

ACCOUNT: Final = "/account/{uid}"
CASHLOG: Final = "/account/cashlog"
CHARGEBILL: Final = "/account/chargebill"
OPLOG: Final = "/power/oplog"
NOTICE: Final = "/power/notice"
PATHS: Final = (ACCOUNT, CASHLOG, CHARGEBILL, OPLOG, NOTICE)
#: The money fields and the state of a billing account: a change of any is a balance change.
BALANCE_FIELDS: Final = ("balance", "overdraft", "advance", "consume", "state")
DEFAULT_MINOR_UNIT: Final = 100


class Unreadable(Exception):
    """The message lacks what its fact needs: published as ``gateway.rejected``."""


# --- money ---------------------------------------------------------------------------------------


def scaled(value: int | Decimal, minor_unit: int) -> str:
    """``value / minor_unit`` as an exact decimal string: 12345 / 100 -> ``"123.45"``,
    -5 / 100 -> ``"-0.05"``, 7 / 1 -> ``"7"``. ``minor_unit`` is a power of ten."""
    if minor_unit < 1:
        raise ValueError("minor_unit must be 1 or more")
    digits = len(str(minor_unit)) - 1
    if 10**digits != minor_unit:
        raise ValueError("minor_unit must be a power of ten")
    amount = Decimal(value).scaleb(-digits)
    if amount == 0:
        amount = abs(amount)  # no "-0.00"
    return format(amount, "f")


def money(value: Any, minor_unit: int) -> Money | None:
    """An int64 amount as sent (numbers or numeric strings) -> :class:`Money`; None when
    missing. A fraction is not an int64: it makes the message unreadable."""
    number = _number(value)
    if number is None:
        return None
    if number != number.to_integral_value():
        raise Unreadable(f"amount {value!r} is not an integer")
    integer = int(number)
    return Money(value=integer, amount=scaled(integer, minor_unit))


def decimal_money(value: Any, minor_unit: int) -> DecimalMoney | None:
    """A ``number (double)`` amount (read as ``Decimal``) -> :class:`DecimalMoney`."""
    number = _number(value)
    if number is None:
        return None
    text = format(number, "f")
    return DecimalMoney(value=text, amount=scaled(number, minor_unit))


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):  # not from our client (it decodes fractions as Decimal)
        value = repr(value)
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise Unreadable(f"amount {value!r} is not a number") from None
    if not number.is_finite():
        raise Unreadable(f"amount {value!r} is not a number")
    return number


# --- the threshold -------------------------------------------------------------------------------


def crossed_below(previous: int | None, current: int, threshold: int) -> bool:
    """The balance went below ``threshold``: it is below now, and it was not before (``None``:
    never seen, which counts as not below). So one crossing is reported once, and the next
    only after the balance has been at or above the threshold again."""
    if current >= threshold:
        return False
    return previous is None or previous >= threshold


# --- the normalizer ------------------------------------------------------------------------------


def normalize_message(text: str, ctx: NormalizeContext) -> list[CloudEvent]:
    """One raw message (see the module docstring) -> its events; never raises."""
    try:
        message = decode_json(text.encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError, UnicodeError):
        return [rejected(ctx, safe_text(text), "not JSON")]
    if not isinstance(message, dict):
        return [rejected(ctx, safe_text(text), "not a JSON object")]
    path = message.get("path")
    try:
        if path == ACCOUNT:
            return _account(message, ctx)
        if path == CASHLOG:
            return _cashlog(message, ctx)
        if path == CHARGEBILL:
            return _bill(message, ctx)
        if path == OPLOG:
            return _oplog(message, ctx)
        if path == NOTICE:
            return _notice(message, ctx)
    except Unreadable as exc:
        return [rejected(ctx, safe_text(text), str(exc), vendorevent=str(path))]
    except (ValidationError, ValueError, TypeError, ArithmeticError) as exc:
        return [rejected(ctx, safe_text(text), f"unreadable {path}: {exc}"[:500], str(path))]
    if not isinstance(path, str) or not path:
        return [rejected(ctx, safe_text(text), "no path: not a polled UUCall record")]
    return [
        make_event(
            ctx,
            "vendor.unknown",
            VendorUnknownData(event=path[:200]),
            identity=("unknown", canonical(message)),
            vendorevent=path[:200],
            raw=message,
        )
    ]


def _enterprise(message: dict[str, Any]) -> str:
    uid = message.get("uid")
    if isinstance(uid, bool) or uid is None or not str(uid).strip():
        raise Unreadable("no uid (enterprise id)")
    return str(uid).strip()


def _minor_unit(message: dict[str, Any]) -> int:
    unit = message.get("minor_unit", DEFAULT_MINOR_UNIT)
    if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1:
        raise Unreadable(f"minor_unit {unit!r} is not a positive integer")
    if 10 ** (len(str(unit)) - 1) != unit:
        raise Unreadable(f"minor_unit {unit} is not a power of ten")
    return unit


def _record(message: dict[str, Any], key: str = "record") -> dict[str, Any] | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Unreadable(f"{key} is not an object")
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _fingerprint(values: Any) -> str:
    return hashlib.sha256(canonical(values).encode()).hexdigest()[:24]


def _account(message: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    uid, unit = _enterprise(message), _minor_unit(message)
    raw = _record(message)
    if raw is None:
        raise Unreadable("no billing account record")
    now = BillingAccount.model_validate(raw)
    before_raw = _record(message, "previous")
    before = BillingAccount.model_validate(before_raw) if before_raw is not None else None
    balance = money(now.balance, unit)
    if balance is None:
        raise Unreadable("the billing account has no balance")
    previous = money(before.balance, unit) if before is not None else None
    after_state = {f: getattr(now, f) for f in BALANCE_FIELDS}
    before_state = {f: getattr(before, f) for f in BALANCE_FIELDS} if before else None
    changed = (
        [f for f in BALANCE_FIELDS if after_state[f] != before_state[f]]
        if before_state is not None
        else list(BALANCE_FIELDS)
    )
    identity = (uid, _fingerprint(after_state))
    billing = _text(now.account)
    subject = billing or uid
    events = [
        make_event(
            ctx,
            "account.balance_changed",
            AccountBalanceChangedData(
                enterprise=uid,
                billing_account=billing,
                name=_text(now.name),
                minor_unit=unit,
                balance=balance,
                overdraft=money(now.overdraft, unit),
                advance=money(now.advance, unit),
                consume=money(now.consume, unit),
                state=now.state,
                previous_balance=previous,
                change=(
                    money(balance.value - previous.value, unit) if previous is not None else None
                ),
                changed=changed,
            ),
            identity=("balance", *identity),
            subject=subject,
            vendorevent=ACCOUNT,
            raw=raw,
        )
    ]
    threshold = message.get("threshold")
    if threshold is not None:
        limit = money(threshold, unit)
        assert limit is not None
        if crossed_below(previous.value if previous else None, balance.value, limit.value):
            events.append(
                make_event(
                    ctx,
                    "account.low_balance",
                    AccountLowBalanceData(
                        enterprise=uid,
                        billing_account=billing,
                        minor_unit=unit,
                        balance=balance,
                        threshold=limit,
                        previous_balance=previous,
                    ),
                    identity=("low_balance", *identity, limit.value),
                    subject=subject,
                    vendorevent=ACCOUNT,
                    raw=raw,
                )
            )
    return events


def _cashlog(message: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    uid, unit = _enterprise(message), _minor_unit(message)
    raw = _record(message)
    if raw is None:
        raise Unreadable("no cash log record")
    entry = CashLog.model_validate(raw)
    if entry.id is None:
        raise Unreadable("the cash log entry has no id")
    amount = money(entry.money, unit)
    if amount is None:
        raise Unreadable("the cash log entry has no money")
    booked = epoch(entry.account_time)
    return [
        make_event(
            ctx,
            "account.recharged",
            AccountRechargedData(
                enterprise=uid,
                entry_id=str(entry.id),
                minor_unit=unit,
                money=amount,
                kind=entry.type,
                booked_at=booked,
                serial_number=_text(entry.serial_number),
                note=_text(entry.note),
            ),
            identity=("cashlog", uid, str(entry.id)),
            time=booked,
            subject=str(entry.id),
            vendorevent=CASHLOG,
            raw=raw,
        )
    ]


def _bill(message: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    uid, unit = _enterprise(message), _minor_unit(message)
    raw = _record(message)
    if raw is None:
        raise Unreadable("no charge bill record")
    bill = ChargeBill.model_validate(raw)
    month = _text(bill.time) or _text(message.get("month"))
    if month is None:
        raise Unreadable("the charge bill has no month (time)")
    before_raw = _record(message, "previous")
    before = ChargeBill.model_validate(before_raw) if before_raw is not None else None
    sub_user = _text(bill.subUserName)
    amounts = [
        None if v is None else format(v, "f")
        for v in (bill.total, bill.basicBill, bill.functionBill)
    ]
    return [
        make_event(
            ctx,
            "account.bill",
            AccountBillData(
                enterprise=uid,
                month=month,
                sub_user=sub_user,
                action="created" if before is None else "changed",
                minor_unit=unit,
                total=decimal_money(bill.total, unit),
                basic=decimal_money(bill.basicBill, unit),
                function=decimal_money(bill.functionBill, unit),
                previous_total=decimal_money(before.total, unit) if before else None,
            ),
            identity=("bill", uid, month, sub_user, *amounts),
            subject=f"{month}/{sub_user}" if sub_user else month,
            vendorevent=CHARGEBILL,
            raw=raw,
        )
    ]


def _oplog(message: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    uid = _enterprise(message)
    raw = _record(message)
    if raw is None:
        raise Unreadable("no operation log record")
    entry = OpLogSubUser.model_validate(raw)
    if entry.id is None:
        raise Unreadable("the operation log entry has no id")
    at = epoch(entry.time)
    who = _text(entry.subUserName)
    return [
        make_event(
            ctx,
            "account.audit",
            AccountAuditData(
                enterprise=uid, entry_id=str(entry.id), at=at, who=who, what=_text(entry.opdescribe)
            ),
            identity=("oplog", uid, str(entry.id)),
            time=at,
            subject=who,
            vendorevent=OPLOG,
            raw=raw,
        )
    ]


def _notice(message: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    uid = _enterprise(message)
    raw, before_raw = _record(message), _record(message, "previous")
    if raw is None and before_raw is None:
        raise Unreadable("neither record nor previous: no notice")
    now = Notice.model_validate(raw) if raw is not None else None
    before = Notice.model_validate(before_raw) if before_raw is not None else None
    shown = now or before
    assert shown is not None
    if shown.id is None:
        raise Unreadable("the notice has no id")
    action = "removed" if now is None else ("created" if before is None else "changed")
    targets = [t.strip() for t in (shown.targets or "").split(",") if t.strip()]
    created = epoch(shown.createtime)
    return [
        make_event(
            ctx,
            "account.notice",
            AccountNoticeData(
                enterprise=uid,
                notice_id=str(shown.id),
                action=action,
                title=_text(shown.title),
                content=shown.content,
                targets=targets,
                created_at=created,
            ),
            identity=(
                "notice",
                uid,
                str(shown.id),
                action,
                _fingerprint(before_raw) if before_raw is not None else None,
                _fingerprint(raw) if raw is not None else None,
            ),
            time=created if action == "created" else None,
            subject=str(shown.id),
            vendorevent=NOTICE,
            raw=raw if raw is not None else before_raw,
        )
    ]
