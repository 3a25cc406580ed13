"""PACS server profiles, their secrets, and the one PACS error.

A :class:`Server` names one PACS: a DICOMweb URL (with optional separate
QIDO, WADO and STOW prefixes) or a DIMSE node (``AET@host:port``), our
calling AE title, authentication (HTTP basic or a bearer token), a CA
bundle for HTTPS (and DICOM TLS), an optional client certificate and key
(paths, never key material), DIMSE over TLS (``tls``) and a timeout in
seconds.

Secrets (a password or a token) are :class:`Secret` objects: their
``repr`` and ``str`` are ``***``, so a profile can be printed, logged or put
into a record without leaking them.  A profile may hold the secret itself
(the profiles file is 0600) or, better, the name of an environment
variable that holds it (``password_env`` / ``token_env``); the command line
only takes the latter.  Every :class:`PacsError` message names the server by
:attr:`Server.label` (name and URL without credentials) and has every known
secret masked.

Profiles are stored as JSON in the user's config folder
(``platformdirs.user_config_dir("napari-medcnn")/pacs_servers.json``, mode
0600, written atomically).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "PacsError",
    "Secret",
    "Server",
    "delete_profile",
    "load_profiles",
    "mask_secrets",
    "parse_dimse_address",
    "profiles_path",
    "save_profile",
]

APP = "napari-medcnn"
PROFILES_FILE = "pacs_servers.json"
MASK = "***"


class Secret:
    """A password or token that never shows itself.

    ``repr``/``str``/``format`` give ``***``; :meth:`reveal` returns the value
    (for the one place that needs it: the HTTP authentication header).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def mask_secrets(text: str, secrets) -> str:
    """``text`` with every secret value (str or :class:`Secret`) replaced by
    ``***``, and any ``user:password@`` in a URL masked too."""
    text = re.sub(r"(?<=://)([^/@\s:]+):([^/@\s]+)@", rf"\1:{MASK}@", str(text))
    for s in secrets:
        value = s.reveal() if isinstance(s, Secret) else s
        if value and len(value) >= 1:
            text = text.replace(value, MASK)
    return text


class PacsError(Exception):
    """A PACS operation failed; the message names the server (by name and
    URL or AE title, never credentials) and the reason.

    Attributes:
        server: the server's :attr:`Server.label`.
        reason: what went wrong, in words.
    """

    def __init__(self, server: Server | str, reason: str, secrets=()):
        label = server.label if isinstance(server, Server) else str(server)
        known = list(secrets)
        if isinstance(server, Server):
            known += server.secrets()
        self.server = mask_secrets(label, known)
        self.reason = mask_secrets(reason, known)
        super().__init__(f"{self.server}: {self.reason}")


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def parse_dimse_address(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` -> ``(aet, host, port)``.

    Raises:
        ValueError: not of that form, an AE title over 16 characters, or a
            port outside 1..65535.
    """
    m = re.fullmatch(r"([^@]{1,64})@(\[[^\]]+\]|[^:]+):(\d+)", text.strip())
    if not m:
        raise ValueError(f"expected AET@HOST:PORT, got {text!r}")
    aet, host, port = m.group(1).strip(), m.group(2).strip("[]"), int(m.group(3))
    if not aet or len(aet) > 16:
        raise ValueError(f"AE title must be 1 to 16 characters, got {aet!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1 to 65535, got {port}")
    return aet, host, port


@dataclass
class Server:
    """One PACS, as a profile.

    Attributes:
        name: the profile's name (shown in messages).
        kind: ``"dicomweb"`` or ``"dimse"``.
        url: DICOMweb root (``https://pacs/dicom-web``), dicomweb only;
            user info in it is refused (use ``user`` + a secret).
        qido_prefix, wado_prefix, stow_prefix: path prefixes under ``url``
            for servers that split the services (dicomweb-client's
            ``*_url_prefix``); None: all at ``url``.
        host, port, called_aet: the DIMSE node (dimse only).
        calling_aet: our AE title (dimse; also the C-MOVE destination).
        storage_port: port of our Storage SCP for C-MOVE (0: a free port,
            which only works when the PACS learns it some other way).
        retrieve: ``"auto"`` (C-GET, falling back to C-MOVE when the PACS
            does not support C-GET), ``"get"`` or ``"move"`` (dimse).
        user: HTTP basic user name (dicomweb).
        password, token: the secret itself (stored in the 0600 profiles
            file) or None; prefer ``password_env`` / ``token_env``.
        password_env, token_env: names of environment variables holding the
            password or the bearer token.
        ca_bundle: a CA bundle file verifying the server's certificate over
            HTTPS or DICOM TLS (None: the system's CAs).
        client_cert, client_key: paths of our client certificate (PEM) and
            its unencrypted private key (None: the key is in ``client_cert``)
            for servers that require one (HTTPS or DICOM TLS); for DICOM TLS
            the certificate is also our Storage SCP's (C-MOVE).
        tls: DIMSE over TLS (dimse only; DICOMweb uses an https:// URL).
        timeout: seconds to wait for a connection or an answer.
    """

    name: str
    kind: str = "dicomweb"
    url: str | None = None
    qido_prefix: str | None = None
    wado_prefix: str | None = None
    stow_prefix: str | None = None
    host: str | None = None
    port: int | None = None
    called_aet: str | None = None
    calling_aet: str = "NAPARI_MEDCNN"
    storage_port: int = 0
    retrieve: str = "auto"
    user: str | None = None
    password: Secret | None = field(default=None, repr=False)
    password_env: str | None = None
    token: Secret | None = field(default=None, repr=False)
    token_env: str | None = None
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in ("dicomweb", "dimse"):
            raise ValueError(f"kind must be 'dicomweb' or 'dimse', got {self.kind!r}")
        for name in ("password", "token"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Secret):
                object.__setattr__(self, name, Secret(value))
        if self.kind == "dicomweb":
            if not self.url:
                raise ValueError(f"server {self.name!r}: a DICOMweb URL is required")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"server {self.name!r}: expected an http(s):// URL, got "
                    f"{_strip_userinfo(self.url)!r}"
                )
            if parts.username or parts.password:
                # never keep credentials in a URL: they end up in logs
                self.url = _strip_userinfo(self.url)
                raise ValueError(
                    f"server {self.name!r}: put no user or password in the URL; "
                    "use --user with --password-env (or the profile)"
                )
            if parts.scheme == "http" and (self.tls or self.client_cert):
                raise ValueError(
                    f"server {self.name!r}: TLS and client certificates need an "
                    "https:// URL"
                )
        else:
            if not (self.host and self.port and self.called_aet):
                raise ValueError(
                    f"server {self.name!r}: DIMSE needs host, port and called AET"
                )
            if self.retrieve not in ("auto", "get", "move"):
                raise ValueError("retrieve must be 'auto', 'get' or 'move'")
        self.tls = bool(self.tls)
        for name in ("ca_bundle", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None:  # a path, never the key itself
                setattr(self, name, os.fspath(value) or None)
        if self.client_key and not self.client_cert:
            raise ValueError(
                f"server {self.name!r}: a client key needs its client certificate"
            )
        self.timeout = float(self.timeout)
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")

    @classmethod
    def dimse(cls, address: str, name: str | None = None, **kwargs) -> Server:
        """A DIMSE profile from ``AET@HOST:PORT``."""
        aet, host, port = parse_dimse_address(address)
        return cls(name or address, "dimse", host=host, port=port, called_aet=aet,
                   **kwargs)  # fmt: skip

    @property
    def label(self) -> str:
        """How messages name the server: ``name (url)`` or
        ``name (AET@host:port)``, never with credentials."""
        if self.kind == "dicomweb":
            where = _strip_userinfo(self.url or "")
        else:
            where = f"{self.called_aet}@{self.host}:{self.port}"
        return self.name if self.name == where else f"{self.name} ({where})"

    def _env(self, var: str | None, what: str) -> Secret | None:
        if not var:
            return None
        value = os.environ.get(var)
        if value is None:
            raise PacsError(
                self, f"the environment variable {var} (the {what}) is not set"
            )
        return Secret(value)

    def resolved_password(self) -> Secret | None:
        """The password (from the profile or ``password_env``), or None.

        Raises:
            PacsError: ``password_env`` names a variable that is not set.
        """
        return self.password or self._env(self.password_env, "password")

    def resolved_token(self) -> Secret | None:
        """The bearer token (from the profile or ``token_env``), or None.

        Raises:
            PacsError: ``token_env`` names a variable that is not set.
        """
        return self.token or self._env(self.token_env, "token")

    def secrets(self) -> list[Secret]:
        """Every secret this profile knows (to mask them in messages)."""
        out = [s for s in (self.password, self.token) if s]
        for var in (self.password_env, self.token_env):
            if var and os.environ.get(var):
                out.append(Secret(os.environ[var]))
        return out

    def to_dict(self, *, include_secrets: bool = False) -> dict:
        """JSON-able fields; secrets are left out unless asked (for the
        0600 profiles file only)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                if not include_secrets:
                    continue
                value = value.reveal()
            if value is None or (f.name == "tls" and not value):
                continue  # an old profile file stays as it was
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Server:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes) -> Server:
        """A copy with some fields changed."""
        return replace(self, **changes)


# -- profiles --------------------------------------------------------------
def profiles_path() -> Path:
    """The profiles file in the user's config folder (may not exist)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP)) / PROFILES_FILE


def load_profiles(path: str | os.PathLike | None = None) -> dict[str, Server]:
    """Every saved profile, by name (empty when there is no file).

    Raises:
        ValueError: the file is not valid JSON or a profile is invalid (the
            message names the file, never a secret).
    """
    path = Path(path) if path else profiles_path()
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: Server.from_dict({**d, "name": name}) for name, d in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a valid PACS profiles file ({exc})") from None


def _write_profiles(servers: dict[str, Server], path: Path) -> Path:
    from napari_medcnn._atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {
        name: {k: v for k, v in s.to_dict(include_secrets=True).items() if k != "name"}
        for name, s in sorted(servers.items())
    }
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, text.encode("utf-8"), mode=0o600)


def save_profile(server: Server, path: str | os.PathLike | None = None) -> Path:
    """Add or replace ``server`` (by name) in the profiles file (mode 0600,
    written atomically); returns the file's path."""
    path = Path(path) if path else profiles_path()
    servers = load_profiles(path)
    servers[server.name] = server
    return _write_profiles(servers, path)


def delete_profile(name: str, path: str | os.PathLike | None = None) -> bool:
    """Remove a profile; returns whether it existed."""
    path = Path(path) if path else profiles_path()
    servers = load_profiles(path)
    if servers.pop(name, None) is None:
        return False
    _write_profiles(servers, path)
    return True
