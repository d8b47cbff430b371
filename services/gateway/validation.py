"""Field types of the APIs' parameter models, declared (in the OpenAPI) exactly as they are validated.

- `Int` and `Float`: numbers, also given as text (form fields are text), but never a JSON
  boolean: pydantic's lax mode would take `"seed": false` as 0.
- `HttpUrl`: an http(s) URL with a host, kept as the client wrote it (a string), declared
  with `format: uri`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def http_url(value: str) -> str:
    """The value if it is an http or https URL with a host; ValueError otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
HttpUrl = Annotated[str, AfterValidator(http_url),
                    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                                    "maxLength": 4096})]
