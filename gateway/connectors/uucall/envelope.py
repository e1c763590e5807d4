"""The envelope UUCall's API wiki shows around every answer, and what its failures mean.

The wiki (its pages on the account, QR-code dialling, call and dialling logs) answers HTTP 200
with ``{"Result": "success", "Code": 0, "Data": <the model or a list>}`` and reports a failure
the same way, still with HTTP 200: ``{"Result": "FAILED", "Code": 1, "Data": "<message>"}``.
Key case varies (``Result`` / ``result``), and so does the failure's spelling (``FAILED`` /
``failed``). The document (seed 000) shows bare models instead; both are read.

An object is an envelope when it has a ``result`` key (any case) saying ``success`` or
``failed`` (any case) and a ``code`` or ``data`` key: a record of the document has none of
these, so a record is never taken for an envelope, nor an envelope for a record.

The failure codes the wiki lists (:data:`VENDOR_CODES`) map to neutral error codes; a code it
does not list is ``failed``. Codes 5 (passport) and 6 (power) are refused credentials and
refused rights, like HTTP 401 and 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.schema.commands import ErrorCode

SUCCESS: Final = "success"
FAILED: Final = "failed"


@dataclass(frozen=True, slots=True)
class VendorCode:
    """One failure code of the wiki: its name there, the neutral code, whether to retry."""

    name: str
    code: ErrorCode
    retryable: bool = False
    #: 401 or 403 when the code refuses the credentials or their rights, else None.
    auth_status: int | None = None


#: The failure codes of the wiki's table (二维码拨号), by ``Code``.
VENDOR_CODES: Final[dict[int, VendorCode]] = {
    1: VendorCode("API_RESULT_CODE_ERROR_CUSTOM", ErrorCode.FAILED),
    2: VendorCode("API_RESULT_CODE_ERROR_METHOD", ErrorCode.UNSUPPORTED),
    3: VendorCode("API_RESULT_CODE_ERROR_LINE", ErrorCode.UNAVAILABLE, retryable=True),
    4: VendorCode("API_RESULT_CODE_ERROR_UNKNOW", ErrorCode.FAILED),
    5: VendorCode("API_RESULT_CODE_ERROR_PASSPORT", ErrorCode.FORBIDDEN, auth_status=401),
    6: VendorCode("API_RESULT_CODE_ERROR_POWER", ErrorCode.FORBIDDEN, auth_status=403),
    100: VendorCode("API_RESULT_CODE_ERROR_PARAM", ErrorCode.INVALID),
    101: VendorCode("API_RESULT_CODE_ERROR_PARAM_P", ErrorCode.INVALID),
    # the wiki's text is cut off after "api方法没有": its meaning is not known
    102: VendorCode("API_RESULT_CODE_ERROR_API", ErrorCode.FAILED),
}
_MESSAGE_KEYS: Final = ("message", "msg", "errmsg", "error", "desc", "description")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope: whether it says success, its ``Code`` as sent, its ``Data``."""

    ok: bool
    code: Any
    data: Any
    message: str | None  # a failure's text: ``Data`` when it is text, else a message key

    def code_number(self) -> int | None:
        """``Code`` as an integer (it may come as text), or None."""
        code = self.code
        if isinstance(code, bool):
            return None
        if isinstance(code, int):
            return code
        if isinstance(code, str) and code.strip().lstrip("-").isdigit():
            return int(code.strip())
        return None

    def vendor_code(self) -> VendorCode | None:
        number = self.code_number()
        return None if number is None else VENDOR_CODES.get(number)

    def code_label(self) -> str:
        """A bounded metric label: a listed code, ``other`` or ``none``."""
        number = self.code_number()
        if number is None:
            return "none" if self.code is None else "other"
        return str(number) if number in VENDOR_CODES else "other"


def read_envelope(body: Any) -> Envelope | None:
    """The envelope ``body`` is, or None when it is not one (see the module docstring)."""
    if not isinstance(body, dict):
        return None
    keys: dict[str, str] = {}
    for key in body:
        if isinstance(key, str):
            keys.setdefault(key.lower(), key)
    if "result" not in keys or not ("code" in keys or "data" in keys):
        return None
    result = body[keys["result"]]
    if not isinstance(result, str) or result.strip().lower() not in (SUCCESS, FAILED):
        return None
    data = body.get(keys["data"]) if "data" in keys else None
    code = body.get(keys["code"]) if "code" in keys else None
    message = None
    if isinstance(data, str) and data.strip():
        message = data.strip()
    else:
        for name in _MESSAGE_KEYS:
            value = body.get(keys[name]) if name in keys else None
            if isinstance(value, str) and value.strip():
                message = value.strip()
                break
    return Envelope(result.strip().lower() == SUCCESS, code, data, message)
