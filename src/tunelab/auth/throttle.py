"""Rate limits on guessing: sign-ins back off, wrong API credentials are throttled.

**Sign-in** (the OAuth token endpoint's grants and the Studio's sign-in): each attempt is
counted *before* the password or secret is checked, per user name (or OAuth client) and per
client address, in the store. The first ``signin_attempts`` are free (four times as many per
address, which people may share); after that each attempt must wait ``signin_backoff_seconds``,
doubling with every further failure up to ``signin_max_backoff_seconds``. Counting first means
a burst of concurrent guesses is cut off at the limit too (a check-then-count would let them all
through before the first failure was written). A correct password clears the user's count and
gives the address back its attempt; failures are forgotten after four times the longest wait
without one. An unknown user name is counted exactly like a known one, so the answers say
nothing about which names exist.

**API credentials**: a wrong key or token costs its client address one request of a bucket of
``bad_credentials_burst`` that refills at ``bad_credentials_per_second``; an address whose
bucket is empty gets 429 with ``Retry-After`` for any credential until it refills. This counter
lives in the process's memory: a flood of wrong keys must not cost a database write each.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import and_, delete, or_

from tunelab.auth.errors import TooManyAttempts
from tunelab.config import Settings
from tunelab.store import Store
from tunelab.store.tables import SignInAttemptRow, utcnow

ADDRESS_SHARE = 4  # an address may be many people (an office, a NAT): it gets this many times


def _key(kind: str, value: str) -> str:
    return f"{kind}:" + hashlib.sha256(value.lower().encode()).hexdigest()[:64]


def _wait_words(seconds: int) -> str:
    return f"{seconds} second{'s' if seconds != 1 else ''}" if seconds < 120 else \
        f"{math.ceil(seconds / 60)} minutes"


class SignInGuard:
    """Counts sign-in attempts in the store and refuses those that come too soon."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.free = settings.signin_attempts
        self.base = settings.signin_backoff_seconds
        self.cap = settings.signin_max_backoff_seconds
        self.forget = timedelta(seconds=4 * self.cap)

    def wait_after(self, failures: int, free: int) -> float:
        """Seconds to wait after ``failures`` counted attempts: none while some are free, then
        1, 2, 4 … times the base, capped."""
        if failures < free:
            return 0.0
        return min(self.cap, self.base * 2 ** min(failures - free, 62))

    @contextmanager
    def attempt(self, who: str | None, address: str | None) -> Iterator[None]:
        """Count an attempt of ``who`` (``user:ann``, ``client:ID``; None: nobody in
        particular, e.g. a refresh token) from ``address``, or raise ``TooManyAttempts``; the
        body checks the secret. Leaving it normally means the secret was right; leaving it by
        an exception leaves the attempt counted as a failure."""
        keys = []
        if who:
            kind, _, value = who.partition(":")
            keys.append((_key(kind, value), self.free))
        if address:
            keys.append((_key("addr", address), self.free * ADDRESS_SHARE))
        if self.free <= 0 or not keys:
            yield
            return
        self._count(keys)
        yield
        self._succeeded(keys, forget_first=who is not None)

    def _count(self, keys: list[tuple[str, int]]) -> None:
        now = utcnow()
        with self.store.session() as s:
            self.store.lock_owner(s, "signin")
            rows = []
            for key, free in keys:
                row = s.get(SignInAttemptRow, key)
                if row is None:
                    row = SignInAttemptRow(key=key, failures=0, last_failure=now)
                    s.add(row)
                elif now - row.last_failure > self.forget:
                    row.failures, row.locked_until = 0, None
                rows.append((row, free))
            waits = [(r.locked_until - now).total_seconds() for r, _ in rows
                     if r.locked_until is not None and r.locked_until > now]
            if waits:  # refused, and not counted (the exception rolls back): no longer wait
                retry = max(1, math.ceil(max(waits)))
                raise TooManyAttempts(
                    retry, f"Too many sign-in attempts. Try again in {_wait_words(retry)}.")
            for row, free in rows:
                row.failures += 1
                row.last_failure = now
                wait = self.wait_after(row.failures, free)
                row.locked_until = now + timedelta(seconds=wait) if wait else None

    def _succeeded(self, keys: list[tuple[str, int]], forget_first: bool) -> None:
        """The user's (or client's) count goes; an address gets its one attempt back (one
        person's right password must not unlock an address others guess from)."""
        with self.store.session() as s:
            self.store.lock_owner(s, "signin")
            if forget_first:
                who = s.get(SignInAttemptRow, keys[0][0])
                if who is not None:
                    s.delete(who)
                keys = keys[1:]
            for key, free in keys:
                row = s.get(SignInAttemptRow, key)
                if row is not None:
                    row.failures = max(0, row.failures - 1)
                    if self.wait_after(row.failures, free) == 0:
                        row.locked_until = None

    def purge(self) -> int:
        """Drop counts that are forgotten anyway (no failure for a long time, no wait left)."""
        now = utcnow()
        with self.store.session() as s:
            gone = s.execute(delete(SignInAttemptRow).where(
                SignInAttemptRow.last_failure < now - self.forget,
                or_(SignInAttemptRow.locked_until.is_(None),
                    and_(SignInAttemptRow.locked_until < now))))
            return gone.rowcount or 0


class CredentialThrottle:
    """A token bucket per client address for requests with a wrong API key or token."""

    def __init__(self, burst: int, per_second: float, max_addresses: int = 65_536):
        self.burst, self.rate, self.max_addresses = burst, per_second, max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> CredentialThrottle:
        return cls(settings.bad_credentials_burst, settings.bad_credentials_per_second)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def check(self, address: str | None) -> None:
        """Raise ``TooManyAttempts`` while ``address`` has no wrong-credential request left."""
        if not address or self.burst <= 0:
            return
        with self._lock:
            tokens = self._tokens(address, time.monotonic())
        if tokens < 1:
            retry = max(1, math.ceil((1 - tokens) / self.rate)) if self.rate > 0 else 3600
            raise TooManyAttempts(
                retry, "Too many requests with an invalid API key or access token from this "
                f"address. Check the credential you send, and try again in {_wait_words(retry)}.")

    def failed(self, address: str | None) -> None:
        if not address or self.burst <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._buckets[address] = (self._tokens(address, now) - 1, now)
            self._buckets.move_to_end(address)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)  # the longest quiet: refilled by now
