"""Authentication errors, with Google's exact wording and ``google.rpc.ErrorInfo`` reasons.
They are ``TunelabError`` subclasses, so ``api/errors.py`` shapes them like every other error
(``details`` included). No message ever contains the credential that was sent."""

from __future__ import annotations

from tunelab.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    error_info,
)


class MissingCredentials(Unauthenticated):
    def __init__(self) -> None:
        super().__init__(
            "Request is missing required authentication credential. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential. Send an API key "
            "(x-goog-api-key header or key= parameter) or 'Authorization: Bearer TOKEN' "
            "(see docs/auth.md)."
        )
        self.details = error_info("CREDENTIALS_MISSING")


class InvalidToken(Unauthenticated):
    def __init__(self, expired: bool = False) -> None:
        super().__init__(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential."
            + (" The access token has expired; refresh it at /oauth2/token." if expired else "")
        )
        self.details = error_info("ACCESS_TOKEN_EXPIRED" if expired else
                                  "ACCESS_TOKEN_TYPE_UNSUPPORTED")


class ApiKeyInvalid(InvalidArgument):
    def __init__(self) -> None:
        super().__init__("API key not valid. Please pass a valid API key.")
        self.details = error_info("API_KEY_INVALID")


class InsufficientScopes(PermissionDenied):
    def __init__(self, method: str = "") -> None:
        super().__init__("Request had insufficient authentication scopes.")
        self.details = error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", method=method)


class TooManyAttempts(ResourceExhausted):
    """Too many sign-in attempts, or wrong credentials, from one user or client address: come
    back after ``retry_after`` seconds (also sent as ``Retry-After`` and google.rpc.RetryInfo,
    which Google's clients read)."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
        self.details = [*error_info("RATE_LIMIT_EXCEEDED"),
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                         "retryDelay": f"{retry_after}s"}]
