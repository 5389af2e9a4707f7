"""Secret redaction: configs and errors land in the runs table, which users share; keys never should."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***redacted***"

_SECRET_NAMES = {
    "apikey",
    "api_key",
    "token",
    "access_token",
    "auth_token",
    "bearer_token",
    "hf_token",
    "refresh_token",
    "id_token",
    "secret",
    "client_secret",
    "secret_key",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "authorization",
    "auth",
    "bearer",
    "cookie",
    "private_key",
    "credential",
    "credentials",
}
# suffixes after a separator: openai_api_key, wandb_token, db_password; not max_tokens or n_tokens
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_token", "_secret", "_secret_key", "_password", "_passwd")

# values that look like credentials whatever their key: OpenAI/Anthropic sk-..., HF hf_..., GitHub, AWS
_SECRET_VALUE = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|"
    r"xox[abpr]-[A-Za-z0-9\-]{10,})"
)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:)(?P<pw>[^@\s/]+)(?P<post>@)")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")
# credentials as URI query parameters: s3://bucket?secret_key=..., Azure SAS ?sig=...
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:access_key|secret_key|secret_access_key|session_token|access_token|sig|account_key|"
    r"sas_token|password|api_key|token)=)[^&\s'\"]+"
)


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_").strip()
    return k in _SECRET_NAMES or k.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """Mask credential-looking substrings (sk-..., hf_..., user:password@ and ?secret_key=... in URLs,
    Bearer ...)."""
    text = _SECRET_VALUE.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['pre']}{REDACTED}{m['post']}", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redact(value: Any) -> Any:
    """A copy of value with secret-named keys masked and credential-looking strings masked."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if value[k] not in (None, "") else value[k])
            if isinstance(k, str) and is_secret_key(k)
            else redact(value[k])
            for k in value
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
