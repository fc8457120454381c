"""The shop's ids for products and customers: opaque strings, what a shop may send and how it is normalised.

An id is 1-128 characters, none of them whitespace or a control character, and no "/" (it must fit in one
URL path segment: /products/{id}). A JSON integer is accepted and means its decimal string, so 12345 and
"12345" are the same shopper. Floats, booleans and anything else are refused.
"""

from __future__ import annotations

import re
from typing import Any

from appliance.errors import InvalidInput

MAX_LENGTH = 128
# characters that are not whitespace, not C0/C1 control characters and not "/", up to the very end: "$" would
# also match before a final newline; (?![\s\S]) means the end in Python and in JSON Schema (ECMA) alike
PATTERN = r"^[^\s/\x00-\x1f\x7f-\x9f]+(?![\s\S])"
_VALID = re.compile(PATTERN)


def shop_id(value: Any, field: str) -> str:
    """The normalised id, or InvalidInput naming `field`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string or an integer, got {type(value).__name__}", field=field)
    if not 1 <= len(value) <= MAX_LENGTH:
        raise InvalidInput(f"{field} must be 1 to {MAX_LENGTH} characters, got {len(value)}", field=field)
    if not _VALID.match(value):
        raise InvalidInput(f"{field} may not hold whitespace, control characters or '/': {value!r}", field=field)
    return value
