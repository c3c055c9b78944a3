"""SASL/OAUTHBEARER for kafka-python: an OIDC client-credentials token provider.

librdkafka fetches OIDC tokens itself (``sasl.oauthbearer.method=oidc``); kafka-python only calls
``token()`` on an object it is given (``sasl_oauth_token_provider``). This is that object, taking the same
settings, so both transports authenticate the same way: an RFC 6749 §4.4 client-credentials grant (client id
and secret in HTTP Basic auth, as librdkafka sends them), the token reused until shortly before it expires.
One provider serves every client of a service, so a connect storm asks the endpoint once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from kafka.net.sasl.oauth import AbstractTokenProvider

from rnnwatch.consumer.errors import BrokerError
from rnnwatch.consumer.options import Secret

__all__ = ["OidcTokenProvider"]

_REFRESH_EARLY_S = 30.0  # ask for a new token this long before the old one expires
_DEFAULT_LIFETIME_S = 300.0  # when the endpoint does not say (expires_in is RECOMMENDED, not required)


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """``token()`` returns a valid access token, fetched from ``url`` when the cached one is near expiry."""

    def __init__(self, url: str, client_id: str, client_secret: Secret, scope: str = "", *,
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.url, self.client_id, self.scope = url, client_id, scope
        self._secret = client_secret
        self.timeout_s = timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires_s = float("-inf")
        self.fetches = 0

    def token(self) -> str:
        with self._lock:
            if self.clock() >= self._expires_s - _REFRESH_EARLY_S:
                self._token, lifetime_s = self._fetch()
                self._expires_s = self.clock() + lifetime_s
            return self._token

    def extensions(self) -> dict[str, str]:
        return {}

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        basic = base64.b64encode(f"{urllib.parse.quote(self.client_id)}:"
                                 f"{urllib.parse.quote(self._secret.reveal())}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked at start-up (http/https only)
            self.url, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            msg = f"OAUTHBEARER token endpoint {self.url} answered HTTP {exc.code}: check the client id and secret"
            raise BrokerError(msg) from None
        except (OSError, ValueError) as exc:
            msg = f"OAUTHBEARER token endpoint {self.url} failed: {type(exc).__name__}: {exc}"
            raise BrokerError(msg) from None
        self.fetches += 1
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            msg = f"OAUTHBEARER token endpoint {self.url} answered without an access_token"
            raise BrokerError(msg)
        lifetime = body.get("expires_in", _DEFAULT_LIFETIME_S)
        return token, float(lifetime) if isinstance(lifetime, int | float) else _DEFAULT_LIFETIME_S
