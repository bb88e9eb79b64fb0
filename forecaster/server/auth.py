"""Who is calling: a bearer token resolved to its tenant, for every transport.

Tokens come from `tokens_file` (lines "token tenant"; "*" as the tenant makes an admin token;
blank lines and "#" comments skipped) and from `auth_token`, the single token of earlier
versions, which stays an admin token. With neither set the service is open and every caller
is the admin, as before tenants existed.

Another transport (the HTTP dashboard) resolves a caller with
`Authenticator.from_settings(settings).tenant_for("Bearer <token>")` and then works through
`forecaster.tenancy.TenantEngine(engine, tenant)`. No grpc here.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from forecaster.config import Settings
from forecaster.errors import InvalidArgumentError, StartupError, UnauthenticatedError
from forecaster.tenancy import ADMIN, Tenant

_BEARER = "bearer "
UNAUTHENTICATED_MESSAGE = (
    "missing or unknown token: send the metadata 'authorization: Bearer <token>' with a token "
    "the service knows (its tokens_file or FORECASTER_AUTH_TOKEN)."
)


def read_tokens_file(path: Path) -> dict[str, Tenant]:
    """token -> tenant from lines "token tenant"; StartupError naming the line when one is bad."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise StartupError(
            f"tokens_file {str(path)!r} cannot be read ({e.strerror}): fix the path given as "
            "--tokens-file or FORECASTER_TOKENS_FILE."
        ) from None
    tokens: dict[str, Tenant] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        where = f"tokens_file {str(path)!r} line {number}"
        if len(parts) != 2:
            raise StartupError(f"{where}: expected 'token tenant', got {len(parts)} words.")
        token, name = parts
        if token in tokens:
            raise StartupError(f"{where}: this token is already given on an earlier line.")
        try:
            tokens[token] = Tenant(name)
        except InvalidArgumentError as e:
            raise StartupError(f"{where}: {e}") from None
    return tokens


class Authenticator:
    """Resolves an "authorization" value to a Tenant, comparing tokens in constant time.

    Args:
        tokens: token -> tenant; empty means no authentication (every caller is the admin).
    """

    def __init__(self, tokens: Mapping[str, Tenant]) -> None:
        self._tokens = MappingProxyType({t.encode(): tenant for t, tenant in tokens.items()})

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        tokens = read_tokens_file(Path(settings.tokens_file)) if settings.tokens_file else {}
        if settings.auth_token:
            tokens[settings.auth_token] = ADMIN
        return cls(tokens)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def tenant_for(self, authorization: str | None) -> Tenant | None:
        """The caller's tenant from "Bearer <token>"; None when the token is missing or unknown.

        Every known token is compared, each in constant time, so the time taken tells nothing
        about which token came close."""
        if not self._tokens:
            return ADMIN
        if not authorization or authorization[: len(_BEARER)].lower() != _BEARER:
            return None
        got = authorization[len(_BEARER) :].encode()
        found: Tenant | None = None
        for token, tenant in self._tokens.items():
            if hmac.compare_digest(got, token):
                found = tenant
        return found

    def require(self, authorization: str | None) -> Tenant:
        """tenant_for, or UnauthenticatedError."""
        tenant = self.tenant_for(authorization)
        if tenant is None:
            raise UnauthenticatedError(UNAUTHENTICATED_MESSAGE)
        return tenant
