"""Secrets in base URLs: which parts of a URL are secret, and the masked form that may be shown.

A base URL may carry a key in its query string (``?api-key=...``, ``?key=...``, ``?token=...``);
some gateways only accept it there. Such URLs are supported, but the value of every parameter whose
name looks like a credential is replaced by ``***`` wherever the URL is shown or stored (the
backend's ``endpoint``, which enters cache keys and the trace, error messages, ``coevol config``).
User info (``http://user:pass@host``) is refused outright: it has a proper place, the
``Authorization`` header, and the config names the environment variable that holds the key.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "has_userinfo", "is_secret_param", "masked_url", "url_secrets"]

MASK = "***"

# Parameter names (lower-cased, "-" read as "_") that hold a credential, as whole words of the name:
# key, api_key, apikey, x-api-key, token, access_token, sig, signature, secret, password, auth ...
_SECRET_WORDS = re.compile(
    r"(^|_)(key|apikey|token|secret|password|passwd|pwd|pass|sig|signature|auth|authorization|"
    r"credential|credentials|session|code)(_|$)"
)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*@)")
# Shortest value worth scrubbing from free text: a 1-2 character "secret" protects nothing and
# replacing it everywhere would garble messages.
_MIN_SCRUB = 3


def is_secret_param(name: str) -> bool:
    """Whether a query parameter's name says it carries a credential."""
    normal = unquote(name).strip().lower().replace("-", "_")
    return bool(_SECRET_WORDS.search(normal))


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@`` before its host."""
    return _USERINFO.match(url.strip()) is not None


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_param(name) else part)
    return "&".join(parts)


def masked_url(url: str) -> str:
    """``url`` with user info and every secret query value replaced by ``***``; the rest verbatim."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", url.strip())
    head, sep, rest = text.partition("?")
    if not sep:
        return text
    query, hash_sep, fragment = rest.partition("#")
    return f"{head}?{_mask_query(query)}{hash_sep}{MASK if fragment else ''}"


def url_secrets(url: str) -> list[str]:
    """Every secret string in ``url`` (raw and percent-decoded), longest first, to scrub from text."""
    found: set[str] = set()
    match = _USERINFO.match(url.strip())
    if match:
        info = match.group(2)[:-1]
        found.update({info, *info.split(":")})
    try:
        query = urlsplit(url.strip()).query
    except ValueError:
        query = url.partition("?")[2]
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and is_secret_param(name):
            found.update({value, unquote(value), unquote(value.replace("+", " "))})
    return sorted((s for s in found if len(s) >= _MIN_SCRUB), key=len, reverse=True)
