"""Authenticated events: each service signs what it emits; consumers act only on what its owner signed.

Anyone who can write to a topic can publish a record that looks like any event. So every
outbox row carries an Ed25519 signature by the service that wrote it (the EventRouter puts
the `signature` column in a `signature` header), and a consumer acts on an event only when
it is signed by the service that owns its type: ORDER_* by order_svc, INVENTORY_* by
inventory_svc, PAYMENT_* by payment_svc (`OWNERS`).

What is signed (`signed_bytes`): the event id, the event type, the saga id, the causation
id and the payload in a canonical JSON form (keys sorted, no spaces, UTF-8). Connect
re-serializes the payload (PostgreSQL's jsonb reorders keys, the JsonConverter writes its
own spacing and escapes), so the consumer signs again what it parsed, never the bytes.

The header is `ed25519:<key id>:<base64 signature>`; the key id is the first 16 hex digits
of the SHA-256 of the raw public key, so a consumer knows which key to try and can say when
a key is unknown.

Keys live in one folder (`SAGA_KEYS_DIR`, made by `saga stack setup`/`up`):

    <keys>/<service>/signing.key        the service's private key (PEM, PKCS #8), mode 0600
    <keys>/<service>/public/<id>.pub    its public keys (PEM): every one is accepted

`rotate` writes a new signing key and adds its public key beside the old one, which stays
accepted until `retire` removes it, so events signed before a rotation still verify. Keys
are read at start: restart the services after a rotation (consumers first, then emitters).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import SagaError
from shared.topics import SERVICES

__all__ = [
    "OWNERS", "Unauthenticated", "KeyRing", "SigningKey", "signed_bytes", "key_id",
    "ensure_keys", "rotate", "retire", "signing_key_path", "KeyEntry", "list_keys", "KEY_ID",
]

OWNERS: dict[str, str] = {aggregate: service for service, aggregate in SERVICES.items()}
"""aggregate type of an event → the service that owns (emits and signs) that event type."""

SCHEME = "ed25519"
_CONTEXT = "saga-event/1"
KEY_ID = re.compile(r"[0-9a-f]{16}")
"""What a key id looks like (`key_id`): 16 lowercase hex digits."""


class Unauthenticated(SagaError):
    """An event not signed by the service that owns its type. `str(error)` says why in one
    line: no signature, a malformed one, a key its owner does not have, or a signature that
    does not verify (forged, or signed content altered since)."""


def canonical_json(payload: Any) -> str:
    """The payload as signed: keys sorted, no whitespace, non-ASCII as is."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed_bytes(*, event_id: str, event_type: str, saga_id: str, causation_id: str, payload: Any) -> bytes:
    """What a signature covers, as bytes: a context line, then the event id, type, saga id,
    causation id and canonical payload, one per line."""
    text = "\n".join((_CONTEXT, event_id, event_type, saga_id, causation_id, canonical_json(payload)))
    return text.encode("utf-8", "surrogatepass")


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex digits naming `public_key` (SHA-256 of its 32 raw bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """One service's private key."""

    service: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @cached_property
    def key_id(self) -> str:
        """The 16 hex digits naming this key's public half (`key_id`), computed once: every
        signature carries it."""
        return key_id(self.private_key.public_key())

    def sign(self, **content: Any) -> str:
        """The `signature` header for `content` (the keyword arguments of `signed_bytes`)."""
        signature = self.private_key.sign(signed_bytes(**content))
        return f"{SCHEME}:{self.key_id}:{base64.b64encode(signature).decode('ascii')}"


@dataclass(frozen=True)
class KeyRing:
    """What one service needs: its own signing key (None when it has none: it then signs
    nothing) and every service's accepted public keys."""

    signing_key: SigningKey | None
    public_keys: Mapping[str, Mapping[str, Ed25519PublicKey]]
    """service → key id → public key."""

    @classmethod
    def load(cls, directory: str | Path, service: str | None) -> KeyRing:
        """The keys under `directory` (layout in the module doc), signing as `service`.
        FileNotFoundError when `service`'s signing key is missing; ValueError for a file
        that is not a PEM Ed25519 key."""
        root = Path(directory)
        public: dict[str, dict[str, Ed25519PublicKey]] = {}
        for name in SERVICES:
            for path in sorted((root / name / "public").glob("*.pub")):
                key = serialization.load_pem_public_key(path.read_bytes())
                if not isinstance(key, Ed25519PublicKey):
                    raise ValueError(f"{path} is not an Ed25519 public key")
                public.setdefault(name, {})[key_id(key)] = key
        signing = None
        if service is not None:
            signing = SigningKey(service, _load_private(signing_key_path(root, service)))
        return cls(signing, public)

    def sign(self, **content: Any) -> str:
        """The signature header for `content`, or "" when this ring has no signing key."""
        return self.signing_key.sign(**content) if self.signing_key is not None else ""

    def authenticate(self, owner: str, header: str | None, **content: Any) -> None:
        """Return when `header` is `owner`'s valid signature of `content`; else Unauthenticated."""
        if not header:
            raise Unauthenticated(f"no signature (an event of {owner} must be signed by it)")
        parts = header.split(":")
        if len(parts) != 3 or parts[0] != SCHEME:
            raise Unauthenticated(f"malformed signature header (expected {SCHEME}:<key id>:<base64>)")
        _, ident, encoded = parts
        key = self.public_keys.get(owner, {}).get(ident)
        if key is None:
            signer = next((name for name, keys in self.public_keys.items() if ident in keys), None)
            if signer is not None:
                raise Unauthenticated(f"signed by {signer}, but only {owner} may emit this event")
            raise Unauthenticated(f"signed with key {ident[:16]!r}, which is none of {owner}'s keys")
        try:
            signature = base64.b64decode(encoded, validate=True)
            key.verify(signature, signed_bytes(**content))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Unauthenticated(f"signature by {owner}'s key {ident} does not verify (forged, or altered since)") from None


def signing_key_path(directory: str | Path, service: str) -> Path:
    """Where `service`'s private key is: `<directory>/<service>/signing.key`."""
    return Path(directory) / service / "signing.key"


def ensure_keys(directory: str | Path, services: Iterable[str] = SERVICES) -> list[str]:
    """Give every service in `services` a signing key under `directory` unless it has one;
    return the services that got a new key. The folder is 0700, private keys 0600."""
    root = Path(directory)
    _private_dir(root)
    made = []
    for service in services:
        if not signing_key_path(root, service).exists():
            _write_new_key(root, service)
            made.append(service)
    return made


def rotate(directory: str | Path, service: str) -> str:
    """A new signing key for `service`; its old public keys stay accepted. Returns the new key id.
    ValueError for a name that is not one of SERVICES."""
    _known(service)
    return _write_new_key(Path(directory), service)


def retire(directory: str | Path, service: str, ident: str) -> None:
    """Stop accepting `service`'s public key `ident` (never its current signing key's).
    FileNotFoundError when there is no such key (or no signing key); ValueError for the key in
    use, a name that is not one of SERVICES, or an `ident` that is not a key id."""
    _known(service)
    if not KEY_ID.fullmatch(ident):
        raise ValueError(f"{ident!r} is not a key id (16 hex digits)")
    root = Path(directory)
    current = key_id(_load_private(signing_key_path(root, service)).public_key())
    if ident == current:
        raise ValueError(f"{ident} is {service}'s current signing key: rotate first")
    (root / service / "public" / f"{ident}.pub").unlink()


@dataclass(frozen=True)
class KeyEntry:
    """One accepted public key in the key folder."""

    service: str
    key_id: str
    current: bool
    """True for the public half of the service's signing key: the key it signs with once
    (re)started."""


def list_keys(directory: str | Path) -> list[KeyEntry]:
    """Every public key under `directory` that a service started now would accept, by service
    (SERVICES order) then key id. A service without a signing key lists its public keys, none
    current. ValueError for a file that is not a PEM Ed25519 key."""
    root = Path(directory)
    ring = KeyRing.load(root, None)
    entries = []
    for service in SERVICES:
        path = signing_key_path(root, service)
        current = key_id(_load_private(path).public_key()) if path.exists() else None
        entries.extend(KeyEntry(service, ident, ident == current) for ident in sorted(ring.public_keys.get(service, {})))
    return entries


def _known(service: str) -> None:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def _write_new_key(root: Path, service: str) -> str:
    private = Ed25519PrivateKey.generate()
    ident = key_id(private.public_key())
    public_dir = root / service / "public"
    _private_dir(root / service)
    public_dir.mkdir(parents=True, exist_ok=True)
    (public_dir / f"{ident}.pub").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    target = signing_key_path(root, service)
    staging = target.with_suffix(".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.replace(staging, target)
    return ident


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key
