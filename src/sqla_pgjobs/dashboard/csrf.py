"""CSRF protection for the dashboard's actions: a signed double-submit token.

Every page sets a cookie holding a random nonce signed with the app's secret (HMAC-SHA256),
and every action form carries the same token in a hidden field. A POST is accepted only
when both are present, equal and correctly signed: another site can make a browser send
the cookie, but cannot read it to put it in the form, and cannot forge a signed one (a
sibling subdomain that plants a cookie of its own lacks the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["COOKIE", "FIELD", "CsrfTokens"]

#: The cookie and the form field that carry the token.
COOKIE = "pgjobs_csrf"
FIELD = "csrf_token"


class CsrfTokens:
    """Makes and checks the tokens of one app (``secret``: random per app when None, so
    that several processes behind one address need a shared one)."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        self._secret = secret.encode() if isinstance(secret, str) else secret

    def _signature(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def new(self) -> str:
        """A fresh token: a nonce and its signature."""
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._signature(nonce)}"

    def valid(self, token: str | None) -> bool:
        """Whether ``token`` is one this app signed."""
        if not token or token.count(".") != 1:
            return False
        nonce, signature = token.split(".")
        return hmac.compare_digest(signature, self._signature(nonce))

    def accepts(self, cookie: str | None, submitted: str | None) -> bool:
        """Whether a POST with this cookie and this form field may act."""
        if not cookie or not submitted or not self.valid(cookie):
            return False
        return hmac.compare_digest(cookie, submitted)
