"""Where the app is and who is asking: one code path for Azure and for the local stack.

Azure: the app's URL and its Easy Auth audience come from flags, the environment (KEYROTATION_URL,
KEYROTATION_AUDIENCE) or a config file (KEYROTATION_CONFIG, default ~/.config/keyrotation/config.json);
the token is azure-identity's (DefaultAzureCredential: the Azure CLI's login, a managed identity, ...).
Local: `.devhost/endpoints.json` (or --state DIR) says where devhost listens, and the token is minted
with devhost's own Easy Auth key (devhost/easy_auth.py), as `python -m devhost token` does.
Every failure becomes a `Failure` with the exit code docs/cli.md documents and a one-line reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from rotation.identity import ROLE_CONSUMER, ROLES

# Exit codes (docs/cli.md).
OK = 0
INTERNAL = 1
USAGE = 2
UNAUTHENTICATED = 3
FORBIDDEN = 4
NOT_FOUND = 5
CONFLICT = 6
UNREACHABLE = 7
ROTATION_FAILED = 8
NOT_CONFIRMED = 9

STATUS_EXIT = {400: USAGE, 413: USAGE, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT}
LOCAL_STATES = (Path(".devhost"), Path(".devhost/demo"))
TIMEOUT = 60.0


class Failure(Exception):
    """What the command tells the user on one line, and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Options:
    url: str | None = None
    audience: str | None = None
    state: Path | None = None
    local: bool = False
    name: str | None = None
    roles: tuple[str, ...] = ()
    config: Path | None = None
    timeout: float = TIMEOUT


@dataclass
class Connection:
    """The app's base URL and how to get a bearer token for it."""

    base_url: str
    where: str  # "azure" or "local", for messages
    token: Callable[[], str]
    verify: bool | str = True

    def call(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None) -> Any:
        """One API call; the JSON answer, or a Failure (status -> exit code, the API's own message)."""
        url = f"{self.base_url}/api/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        try:
            response = requests.request(
                method, url, headers=headers, params=params, json=body, timeout=TIMEOUT, verify=self.verify
            )
        except requests.RequestException as exc:
            raise Failure(UNREACHABLE, f"cannot reach the app at {self.base_url} ({type(exc).__name__})") from None
        if response.status_code < 400:
            try:
                return response.json()
            except ValueError:
                raise Failure(INTERNAL, f"the app answered {response.status_code} without JSON") from None
        raise Failure(_exit_for(response.status_code), _error_line(response))


def _exit_for(status: int) -> int:
    if status in STATUS_EXIT:
        return STATUS_EXIT[status]
    return UNREACHABLE if status in (502, 503, 504) else INTERNAL


def _error_line(response: requests.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code, message = error.get("code"), error.get("message")
    if code and message:
        return f"{response.status_code} {code}: {message}"
    if response.status_code == 401:  # Easy Auth itself refused the token, before the app saw it
        return "401 unauthenticated: the app refused the token (az login again, or check --audience)"
    return f"{response.status_code} {response.reason or 'error'} from the app"


def _config_file(options: Options) -> dict[str, Any]:
    path = options.config or Path(
        os.environ.get("KEYROTATION_CONFIG") or Path.home() / ".config" / "keyrotation" / "config.json"
    )
    if not path.exists():
        if options.config is not None:
            raise Failure(USAGE, f"config file {path} does not exist")
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise Failure(USAGE, f"config file {path} is not a JSON object") from None
    if not isinstance(data, dict):
        raise Failure(USAGE, f"config file {path} is not a JSON object")
    return data


def connect(options: Options) -> Connection:
    """Azure when a URL is given (flag, environment, config file), else the local stack."""
    config = _config_file(options)
    url = options.url or os.environ.get("KEYROTATION_URL") or config.get("url")
    if url and not options.local and options.state is None:
        audience = options.audience or os.environ.get("KEYROTATION_AUDIENCE") or config.get("audience")
        if not audience:
            raise Failure(
                USAGE,
                "no Easy Auth audience: pass --audience, set KEYROTATION_AUDIENCE or 'audience' in the config file",
            )
        return Connection(str(url).rstrip("/"), "azure", azure_token(str(audience)))
    return local(options)


def azure_token(audience: str) -> Callable[[], str]:
    """A token for the app's Easy Auth audience from azure-identity (Azure CLI login, managed identity, ...)."""
    scope = audience if audience.endswith("/.default") else f"{audience.rstrip('/')}/.default"
    cache: dict[str, str] = {}

    def token() -> str:
        if "token" not in cache:
            from azure.core.exceptions import ClientAuthenticationError
            from azure.identity import DefaultAzureCredential

            try:
                cache["token"] = (
                    DefaultAzureCredential(exclude_interactive_browser_credential=True).get_token(scope).token
                )
            except ClientAuthenticationError:
                raise Failure(UNAUTHENTICATED, f"no Azure token for {audience}: sign in (az login) and retry") from None
        return cache["token"]

    return token


def local(options: Options) -> Connection:
    """The local stack: devhost's endpoints.json and a token minted with its Easy Auth key."""
    states = (options.state,) if options.state is not None else LOCAL_STATES
    for state in states:
        assert state is not None
        path = state / "endpoints.json"
        if path.exists():
            break
    else:
        where = " or ".join(str(s / "endpoints.json") for s in states)
        raise Failure(UNREACHABLE, f"no app configured and no local stack running ({where} is missing): "
                      "pass --url/--audience for Azure, or start one with `make serve`")  # fmt: skip
    try:
        endpoints = json.loads(path.read_text())
        base_url = str(endpoints["host"]).rstrip("/")
    except (OSError, ValueError, KeyError):
        raise Failure(UNREACHABLE, f"{path} is not a devhost endpoints file") from None
    key_file = state / "easyauth.key"
    name = options.name or os.environ.get("USER") or "operator"
    roles = options.roles or tuple(r for r in ROLES if r != ROLE_CONSUMER)

    def token() -> str:
        if not endpoints.get("easyAuth"):
            return ""
        from devhost.easy_auth import issue_token, load_or_create_signing_key

        if not key_file.exists():
            raise Failure(UNAUTHENTICATED, f"{key_file} is missing: the local stack has no Easy Auth key")
        return str(issue_token(load_or_create_signing_key(state), name, roles, ttl=600))

    return Connection(base_url, "local", token)
