"""The section 3 models against the document's own field lists, and their tolerance of what a
real service sends (numbers as strings, extra fields, missing fields, doubles)."""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Any, Union, get_args, get_origin

import pytest

from gateway.connectors.uucall.client import decode_json
from gateway.connectors.uucall.models import (
    MODELS,
    BillingAccount,
    CashLog,
    ChargeBill,
    GiftRate,
    Notice,
    epoch,
    epoch_ms,
)
from tests.uucall.document import models, operations

PY_TYPES = {"string": str, "integer (int64)": int, "number (double)": Decimal}


def _inner(annotation: Any) -> Any:
    """``int | None`` -> ``int``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        return args[0]
    return annotation


def test_every_model_of_the_document_and_no_other() -> None:
    assert set(MODELS) == set(models())
    assert len(MODELS) == 16


@pytest.mark.parametrize("name", sorted(models()))
def test_model_fields_are_the_documents(name: str) -> None:
    """Names (aliases where needed), types and the fields the document marks required."""
    documented = models()[name]
    model = MODELS[name]
    by_doc_name = {(f.alias or n): f for n, f in model.model_fields.items()}
    assert list(by_doc_name) == [f.name for f in documented], "same names, same order"
    for field in documented:
        assert _inner(by_doc_name[field.name].annotation) is PY_TYPES[field.type], field
    assert model.DOC_REQUIRED == {f.name for f in documented if f.required}


def test_every_answer_model_of_section_2_exists() -> None:
    answered = {op.model for op in operations() if op.model}
    assert answered <= set(MODELS)
    assert answered == set(MODELS) - {"BaseUser"}, "BaseUser answers no path"


def test_numbers_as_strings_and_strings_as_numbers() -> None:
    entry = CashLog.model_validate(
        {"id": "17", "account_time": "1714550400000", "money": "50000", "type": 1, "note": 42}
    )
    assert (entry.id, entry.account_time, entry.money, entry.note) == (
        17,
        1714550400000,
        50000,
        "42",
    )
    assert entry.doc() == {
        "id": 17,
        "account_time": 1714550400000,
        "money": 50000,
        "type": 1,
        "note": "42",
    }


def test_extra_fields_are_kept_and_missing_ones_are_none() -> None:
    account = BillingAccount.model_validate({"balance": 100, "currency": "CNY", "extra": {"a": 1}})
    assert account.balance == 100 and account.overdraft is None and account.note is None
    assert account.model_extra == {"currency": "CNY", "extra": {"a": 1}}
    assert account.doc() == {"balance": 100, "currency": "CNY", "extra": {"a": 1}}


def test_the_documents_spelling_is_kept() -> None:
    card = GiftRate.model_validate({"id": 1, "notie": "门店赠送", "state": 1})
    assert card.notie == "门店赠送" and card.state == "1"
    assert "notie" in card.doc()


def test_doubles_stay_exact_decimals() -> None:
    """The client decodes ``1523.1`` as ``Decimal('1523.1')`` (a float would be
    1523.0999999999999); the model keeps it, ``doc()`` gives its exact text."""
    bill = ChargeBill.model_validate(
        decode_json(
            b'{"total": 1523.1, "basicBill": 0.1, "functionBill": 1523.0, "time": "2024-05"}'
        )
    )
    assert bill.total == Decimal("1523.1") and isinstance(bill.total, Decimal)
    assert bill.doc() == {
        "total": "1523.1",
        "basicBill": "0.1",
        "functionBill": "1523.0",
        "time": "2024-05",
    }


def test_a_fraction_in_an_int64_field_is_refused() -> None:
    with pytest.raises(ValueError):
        CashLog.model_validate({"id": 1, "money": Decimal("5.5")})


def test_notice_targets_are_text() -> None:
    notice = Notice.model_validate({"id": 3, "targets": "101,102", "uid": "10001"})
    assert notice.targets == "101,102" and notice.uid == 10001


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        (1714550400, "2024-05-01T08:00:00+00:00"),  # seconds
        (1714550400123, "2024-05-01T08:00:00.123000+00:00"),  # milliseconds
        ("1714550400123", "2024-05-01T08:00:00.123000+00:00"),
        (0, None),
        (-5, None),
        ("soon", None),
        (True, None),
        (None, None),
        (10**20, None),
    ],
)
def test_epoch_values_in_either_unit(value: Any, iso: str | None) -> None:
    when = epoch(value)
    assert (when.isoformat() if when else None) == iso
    if iso is not None:
        assert epoch_ms(value) == int(when.timestamp() * 1000) if when else None
