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

from tunelab.auth.errors import TooManyAttempts
from tunelab.config import Settings
from tunelab.store.accounts import AccountRecords

ADDRESS_SHARE = 4  # an address may be many people (an office, a NAT): it gets this many times


def _key(kind: str, value: str) -> str:
    return f"{kind}:" + hashlib.sha256(value.lower().encode()).hexdigest()[:64]


def _wait_words(seconds: int) -> str:
    return f"{seconds} second{'s' if seconds != 1 else ''}" if seconds < 120 else \
        f"{math.ceil(seconds / 60)} minutes"


class SignInGuard:
    """Counts sign-in attempts in the store and refuses those that come too soon."""

    def __init__(self, records: AccountRecords, settings: Settings):
        self.records = records
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

    def _wait_for(self, key: str, failures: int) -> float:
        """The wait of a counted key: an address gets ``ADDRESS_SHARE`` times the free
        attempts of a user or client."""
        free = self.free * ADDRESS_SHARE if key.startswith("addr:") else self.free
        return self.wait_after(failures, free)

    @contextmanager
    def attempt(self, who: str | None, address: str | None) -> Iterator[None]:
        """Count an attempt of ``who`` (``user:ann``, ``client:ID``; None: nobody in
        particular, e.g. a refresh token) from ``address``, or raise ``TooManyAttempts``; the
        body checks the secret. Leaving it normally means the secret was right; leaving it by
        an exception leaves the attempt counted as a failure."""
        keys = []
        if who:
            kind, _, value = who.partition(":")
            keys.append(_key(kind, value))
        if address:
            keys.append(_key("addr", address))
        if self.free <= 0 or not keys:
            yield
            return
        wait = self.records.count_attempt(keys, self.forget, self._wait_for)
        if wait > 0:  # refused, and not counted: no longer wait
            retry = max(1, math.ceil(wait))
            raise TooManyAttempts(
                retry, f"Too many sign-in attempts. Try again in {_wait_words(retry)}.")
        yield
        # The user's (or client's) count goes; an address gets its one attempt back (one
        # person's right password must not unlock an address others guess from).
        forget = keys[0] if who else None
        self.records.attempt_succeeded(forget, keys[1:] if who else keys, self._wait_for)

    def purge(self) -> int:
        """Drop counts that are forgotten anyway (no failure for a long time, no wait left)."""
        return self.records.purge_attempts(self.forget)


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
