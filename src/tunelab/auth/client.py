"""Credentials for the CLI's calls to a tunelab service: ``HOME/login.json`` (written by
``tunelab login``) or else ``HOME/credentials.json`` (the owner's, written by the first
``tunelab serve``). Requests carry a bearer token from the refresh token; on a 401 (expired)
the token is refreshed once and the request repeated."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import httpx

from tunelab.config import Settings
from tunelab.errors import Unauthenticated


def login_file(settings: Settings) -> Path:
    return settings.home / "login.json"


def load_credentials(settings: Settings) -> dict | None:
    for path in (login_file(settings), settings.credentials_file):
        if path.exists():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return None


def fetch_token(server: str, creds: dict) -> str:
    data = {"grant_type": "refresh_token", "refresh_token": creds.get("refresh_token", ""),
            "client_id": creds.get("client_id") or "tunelab",
            "client_secret": creds.get("client_secret") or ""}
    r = httpx.post(server.rstrip("/") + "/oauth2/token", data=data, timeout=30)
    if r.status_code != 200:
        try:
            why = r.json().get("error_description", r.text)
        except ValueError:
            why = r.text
        raise Unauthenticated(f"Signing in to {server} failed: {why} Run `tunelab login`.")
    return r.json()["access_token"]


class BearerAuth(httpx.Auth):
    def __init__(self, server: str, creds: dict):
        self.server, self.creds, self.token = server, creds, None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token is None:
            self.token = fetch_token(self.server, self.creds)
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 401:
            self.token = fetch_token(self.server, self.creds)
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request


def auth_for(server: str, settings: Settings | None = None) -> httpx.Auth | None:
    creds = load_credentials(settings or Settings())
    if not creds or not creds.get("refresh_token"):
        return None
    return BearerAuth(server, creds)
