"""Making and checking secrets. Nothing secret is ever stored: API keys and OAuth tokens are
random (256 bits), so one SHA-256 is enough to store them (a lookup by hash, no salt needed);
passwords are chosen by people, so they get a salted, slow scrypt hash.

Each kind of secret has a prefix (``tlk_`` API key, ``tla_`` access token, ``tlr_`` refresh
token, ``tls_`` client secret) so a leaked one is recognisable by secret scanners and a key
sent as a bearer token (or the reverse) is told apart at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

API_KEY = "tlk_"
ACCESS_TOKEN = "tla_"
REFRESH_TOKEN = "tlr_"
CLIENT_SECRET = "tls_"

# scrypt cost: N=2**14, r=8 → 16 MiB and ~50 ms per check; enough for an interactive login.
_N, _R, _P = 2**14, 8, 1


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def new_password() -> str:
    """A one-time password people can type: 4 groups of 5 lowercase letters and digits."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


# A hash no password matches (random salt and digest, written once), with the same cost as
# every stored hash: checking a password against it when the user is unknown, disabled or has
# no password takes as long as a wrong password for a real user, so the time of an answer
# does not tell which user names exist.
UNUSABLE = (f"scrypt${_N}${_R}${_P}$pVOTyQ0kLnEmcTCHh1Rk1g=="
            "$Fh5rTzJ3GDRZaoZmd3iAq1V6bPCZ6RAnJ2HN6tjXvg8=")


def check_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; always one scrypt (against ``UNUSABLE`` when
    nothing is stored), so every wrong answer costs the same."""
    if not stored:
        check_password(password, UNUSABLE)
        return False
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))
