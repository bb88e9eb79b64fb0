"""Who is calling: a bearer token resolved to its tenant, for every transport.

Tokens come from `tokens_file` (lines "token tenant"; "*" as the tenant makes an admin token;
blank lines and "#" comments skipped), from FORECASTER_TOKENS (the same entries separated by
commas or newlines) and from `auth_token`, the single token of earlier
versions, which stays an admin token. With neither set the service is open and every caller
is the admin, as before tenants existed.

Another transport (the HTTP dashboard) resolves a caller with
`Authenticator.from_settings(settings).tenant_for("Bearer <token>")` and then works through
`forecaster.tenancy.TenantEngine(engine, tenant)`. No grpc here.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from forecaster.config import ENV_PREFIX, Settings
from forecaster.errors import InvalidArgumentError, StartupError, UnauthenticatedError
from forecaster.tenancy import ADMIN, Tenant

_BEARER = "bearer "
UNAUTHENTICATED_MESSAGE = (
    "missing or unknown token: send the metadata 'authorization: Bearer <token>' with a token "
    "the service knows (its tokens_file, FORECASTER_TOKENS or FORECASTER_AUTH_TOKEN)."
)


def parse_tokens(entries: list[str], where: Callable[[int], str]) -> dict[str, Tenant]:
    """token -> tenant from entries "token tenant" (blank ones and "#" comments skipped);
    StartupError saying where (where(number), number counted from 1) when one is bad."""
    tokens: dict[str, Tenant] = {}
    for number, entry in enumerate(entries, 1):
        text = entry.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise StartupError(f"{where(number)}: expected 'token tenant', got {len(parts)} words.")
        token, name = parts
        if token in tokens:
            raise StartupError(f"{where(number)}: this token is already given earlier.")
        try:
            tokens[token] = Tenant(name)
        except InvalidArgumentError as e:
            raise StartupError(f"{where(number)}: {e}") from None
    return tokens


def read_tokens_file(path: Path) -> dict[str, Tenant]:
    """token -> tenant from lines "token tenant"; StartupError naming the line when one is bad."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise StartupError(
            f"tokens_file {str(path)!r} cannot be read ({e.strerror}): fix the path given as "
            "--tokens-file or FORECASTER_TOKENS_FILE."
        ) from None
    return parse_tokens(lines, lambda n: f"tokens_file {str(path)!r} line {n}")


def tokens_from_variable(value: str) -> dict[str, Tenant]:
    """token -> tenant from FORECASTER_TOKENS: "token tenant" entries separated by commas or
    newlines (a Kubernetes Secret mapped to the variable keeps the file's lines). The error
    names the entry by its number, never by its text (it holds a token)."""
    entries = value.replace(",", "\n").splitlines()
    return parse_tokens(entries, lambda n: f"{ENV_PREFIX}TOKENS entry {n}")


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
        for token, tenant in tokens_from_variable(settings.tokens).items():
            if token in tokens:
                raise StartupError(
                    f"a token of {ENV_PREFIX}TOKENS is also in tokens_file "
                    f"{settings.tokens_file!r}: give each token once."
                )
            tokens[token] = tenant
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
