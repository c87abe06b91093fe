"""Who is calling: App JWTs, installation tokens, personal and OAuth user tokens.

GitHub's rules, as the simulator enforces them: a JWT is RS256-signed by the App's key,
names the App in `iss`, expires at most 10 minutes ahead and was not issued more than 60
seconds in the future. An installation token works on the repositories it was scoped to,
with the permissions it was granted, for one hour.
"""

import base64
import binascii
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from honk_sim.github_state import ACCESS_RANK, ROLE_RANK, App, Repo, SimState, Token

_TOKEN_ALPHABET = string.ascii_letters + string.digits


class ApiError(Exception):
    """An answer other than success, in GitHub's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        documentation_url: str = "https://docs.github.com/rest",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.documentation_url = documentation_url

    def __str__(self) -> str:
        details = [e["message"] for e in self.errors or [] if "message" in e]
        return "; ".join([f"{self.status} {self.message}", *details])


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials")


def not_accessible() -> ApiError:
    return ApiError(403, "Resource not accessible by integration")


def new_token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))


def new_rsa_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@dataclass(frozen=True)
class Caller:
    """The identity behind a request's Authorization header."""

    kind: Literal["app", "installation", "personal", "oauth", "anonymous"]
    login: str | None  # the acting user (the App's bot for installation tokens)
    app: App | None = None
    token: Token | None = None

    def can_use(self, permission: str, level: Literal["read", "write"]) -> bool:
        """Whether an installation token holds `permission` at `level` (users: always)."""
        if self.kind != "installation" or self.token is None:
            return True
        held = self.token.permissions.get(permission, "none")
        return ACCESS_RANK.get(held, 0) >= ACCESS_RANK[level]


def verify_app_jwt(state: SimState, encoded: str) -> App:
    """The App a JWT authenticates, or 401 with GitHub's message."""
    try:
        claims = jwt.decode(encoded, options={"verify_signature": False})
        issuer = str(claims.get("iss", ""))
    except jwt.PyJWTError as error:
        raise ApiError(401, "A JSON web token could not be decoded") from error
    app = next((a for a in state.apps.values() if issuer in (str(a.id), a.client_id)), None)
    if app is None:
        raise ApiError(401, "A JSON web token could not be decoded")
    try:
        claims = jwt.decode(
            encoded,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"require": ["iat", "exp", "iss"], "verify_iat": False},
            leeway=0,
        )
    except jwt.ExpiredSignatureError as error:
        raise ApiError(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires",
        ) from error
    except jwt.PyJWTError as error:
        raise ApiError(401, "A JSON web token could not be decoded") from error
    now = time.time()
    if float(claims["exp"]) > now + 600 + 5:
        raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
    if float(claims["iat"]) > now + 60:
        raise ApiError(
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued",
        )
    return app


def caller_from_header(state: SimState, header: str | None, *, now: datetime) -> Caller:
    """Resolve `Authorization`; a missing header is anonymous, a bad one is 401."""
    if not header:
        return Caller("anonymous", None)
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credential + "=" * (-len(credential) % 4))
        except binascii.Error as error:
            raise bad_credentials() from error
        credential = decoded.decode(errors="replace").partition(":")[2]
    elif scheme not in ("token", "bearer"):
        raise bad_credentials()
    if credential.count(".") == 2 and scheme == "bearer":
        app = verify_app_jwt(state, credential)
        return Caller("app", None, app=app)
    token = state.tokens.get(credential)
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        raise bad_credentials()
    app = None
    if token.kind == "installation" and token.installation_id is not None:
        installation = state.installations.get(token.installation_id)
        if installation is None:
            raise bad_credentials()
        app = state.apps[installation.app_id]
    elif token.app_id is not None:
        app = state.apps.get(token.app_id)
    return Caller(token.kind, token.login, app=app, token=token)


def require_repo(
    state: SimState,
    caller: Caller,
    full_name: str,
    *,
    permission: str,
    level: Literal["read", "write"],
    user_role: str = "read",
) -> Repo:
    """The repository if `caller` may act on it this way, else GitHub's error.

    `permission` / `level` is what an installation token must hold; `user_role` is the
    least role a user needs. Unknown and invisible repositories are both 404.
    """
    repo = state.repo(full_name)
    if repo is None:
        raise not_found()
    if caller.kind == "app":
        raise not_accessible()
    if caller.kind == "installation":
        token = caller.token
        assert token is not None and token.installation_id is not None
        installation = state.installations[token.installation_id]
        in_scope = repo.full_name in installation.repos and (
            token.repos is None or repo.full_name in token.repos
        )
        if not in_scope:
            raise not_accessible()
        if not caller.can_use(permission, level):
            raise not_accessible()
        return repo
    if caller.kind == "anonymous":
        if repo.private:
            raise not_found()
        if level == "write":
            raise ApiError(401, "Requires authentication")
        return repo
    assert caller.login is not None
    if caller.kind == "oauth" and caller.app is not None:
        installed = any(
            repo.full_name in i.repos
            for i in state.installations.values()
            if i.app_id == caller.app.id
        )
        if not installed:
            raise not_found()
    role = state.role(repo, caller.login)
    if role == "none":
        raise not_found()
    if ROLE_RANK[role] < ROLE_RANK[user_role]:
        raise ApiError(403, "Must have push access to repository")
    return repo


def issue_installation_token(
    state: SimState,
    *,
    app: App,
    installation_id: int,
    repositories: list[str] | None,
    permissions: dict[str, str] | None,
    expires_at: datetime,
) -> Token:
    installation = state.installations.get(installation_id)
    if installation is None or installation.app_id != app.id:
        raise not_found()
    scoped: frozenset[str] | None = None
    if repositories is not None:
        names = {r.split("/")[-1].lower(): r for r in installation.repos}
        missing = [name for name in repositories if name.lower() not in names]
        if missing:
            raise ApiError(
                422,
                "There is at least one repository that does not exist or is not accessible "
                "to the parent installation.",
            )
        scoped = frozenset(names[name.lower()] for name in repositories)
    granted = dict(installation.permissions)
    if permissions:
        for name, level in permissions.items():
            if ACCESS_RANK.get(granted.get(name, "none"), 0) < ACCESS_RANK.get(level, 3):
                raise ApiError(
                    422, "The permissions requested are not granted to this installation."
                )
        # GitHub always grants read access to metadata with any scoped permission.
        granted = {"metadata": "read", **permissions}
    token = Token(
        value=new_token("ghs_"),
        kind="installation",
        login=app.bot_login,
        expires_at=expires_at,
        installation_id=installation_id,
        repos=scoped,
        permissions=granted,
    )
    state.tokens[token.value] = token
    return token
