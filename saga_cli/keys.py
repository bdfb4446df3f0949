"""`saga stack keys list|rotate|retire`: the services' signing keys in the stack's key folder.

The folder (`SAGA_KEYS_DIR`, else `.stack/keys`; layout in shared/auth.py) is made by
`saga stack up` and `saga stack setup`. These commands only change files: the services read
their keys when they start, so a rotation takes effect once they are restarted (`saga
restart`) — the other services first (from then on they accept the new key), then the
rotated one (from then on it signs with it). The other way round, the rotated service would
sign with a key the others do not know yet, and they would dead-letter its events until
restarted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography.exceptions import UnsupportedAlgorithm
from rich.console import Console
from rich.table import Table

from saga_cli.errors import CliError
from saga_cli.output import console, print_json
from saga_cli.stack import StackSettings
from shared import auth
from shared.topics import SERVICES

RESTART = (
    "Services read their keys when they start: restart the other services first (they then accept "
    "the new key), then SERVICE (it then signs with it): `saga restart OTHER OTHER SERVICE` does them in "
    "that order; with compose, `docker compose restart` them in that order."
)

keys_app = typer.Typer(
    no_args_is_help=True,
    help="The services' signing keys (SAGA_KEYS_DIR, else .stack/keys): list, rotate, retire. "
         "Services read their keys when they start: after a change, restart the services (`saga restart`).",
)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

ServiceArgument = Annotated[str, typer.Argument(metavar="SERVICE", help=f"One of {', '.join(SERVICES)}.",
                                                show_default=False)]


@keys_app.command("list", help="Each service's accepted public keys: `current` is the one it signs with once "
                               "(re)started, `accepted` an older one still accepted until retired.")
def list_keys(as_json: Annotated[bool, typer.Option(
        "--json", help='Print one JSON document: a list of {"service", "key_id", "state"}.')] = False) -> None:
    """Print the key folder's public keys, one row (or JSON object) per service and key id, `state`
    "current" or "accepted". CliError when the folder is missing or holds a damaged key."""
    directory = _existing_folder()
    rows = [{"service": entry.service, "key_id": entry.key_id, "state": "current" if entry.current else "accepted"}
            for entry in _call(auth.list_keys, directory)]
    if as_json:
        print_json(rows)
        return
    table = Table("service", "key id", "state", caption=f"keys in {directory}")
    for row in rows:
        state = "[green]current[/green]" if row["state"] == "current" else "accepted"
        table.add_row(row["service"], row["key_id"], state)
    console().print(table)


@keys_app.command("rotate", help="A new signing key for SERVICE; its old public keys stay accepted until "
                                 "retired, so events signed before still verify. Prints the new key id. " + RESTART)
def rotate(service: ServiceArgument) -> None:
    """Write a new signing key for `service` (auth.rotate) and print its id. CliError for an unknown
    service, a missing folder or signing key, or a folder that cannot be written."""
    directory = _existing_folder()
    _known(service)
    if not auth.signing_key_path(directory, service).exists():
        raise CliError(f"{service} has no signing key in {directory} (`saga stack up` or `saga stack setup` makes it)")
    old = _current(directory, service)
    new = _call(auth.rotate, directory, service)
    print(new)
    kept = f"; {old} stays accepted until `saga stack keys retire {service} {old}`" if old else ""
    order = " ".join([*(name for name in SERVICES if name != service), service])
    _err.print(f"{service} signs with {new} once restarted{kept}. Restart the other services first, then "
               f"{service}: saga restart {order}")


@keys_app.command("retire", help="Stop accepting SERVICE's public key KEYID (never the current one: rotate first). "
                                 "Retire a key only once SERVICE runs with its new key and no event signed with the "
                                 "old one is still to be consumed or replayed: from then on such an event is a dead "
                                 "letter. Services read their keys when they start: restart them (`saga restart`) "
                                 "for the retirement to take effect.")
def retire(
    service: ServiceArgument,
    key_id: Annotated[str, typer.Argument(metavar="KEYID", help="16 hex digits, as `saga stack keys list` shows.",
                                          show_default=False)],
) -> None:
    """Remove `service`'s public key `key_id` (auth.retire). CliError for an unknown service, a
    malformed or unknown key id, the current signing key, or a folder that cannot be written."""
    directory = _existing_folder()
    _known(service)
    key_id = key_id.strip().lower()
    if not auth.KEY_ID.fullmatch(key_id):
        raise CliError(f"{key_id!r} is not a key id (16 hex digits; `saga stack keys list` shows them)")
    if key_id not in {entry.key_id for entry in _call(auth.list_keys, directory) if entry.service == service}:
        raise CliError(f"{service} has no key {key_id} in {directory} (`saga stack keys list` shows them)")
    if key_id == _current(directory, service):
        raise CliError(f"{key_id} is {service}'s current signing key: rotate first (`saga stack keys rotate {service}`)")
    _call(auth.retire, directory, service, key_id)
    _err.print(f"{service}'s key {key_id} retired; restart the services for them to refuse it: saga restart")


def _existing_folder() -> Path:
    directory = StackSettings().keys_dir
    if not directory.is_dir():
        raise CliError(f"no keys in {directory} (`saga stack up` or `saga stack setup` makes them; SAGA_KEYS_DIR moves them)")
    return directory


def _known(service: str) -> None:
    if service not in SERVICES:
        raise CliError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def _current(directory: Path, service: str) -> str | None:
    return next((entry.key_id for entry in _call(auth.list_keys, directory)
                 if entry.service == service and entry.current), None)


def _call(function, *args):
    """`function(*args)` with what the file system or a damaged key file says as one line."""
    try:
        return function(*args)
    except OSError as error:
        raise CliError(f"cannot use the keys in {args[0]}: {error.strerror or error}"
                       + (f" ({error.filename})" if error.filename else "")) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:  # a file that is not an unencrypted Ed25519 key
        raise CliError(f"cannot use the keys in {args[0]}: {' '.join(str(error).split())}") from None
