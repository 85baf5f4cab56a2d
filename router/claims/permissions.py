"""RabbitMQ users and permissions for the applications (and optionally the router).

:func:`rabbitmq_definitions` returns a definitions document, the JSON that
``rabbitmqctl import_definitions FILE`` and the management API's ``POST /api/definitions``
load. Importing is additive: it creates or updates the users and permissions it names and
leaves everything else alone. The virtual host must already exist (it is not in the document,
so that importing never rewrites its metadata).

The permission model
--------------------

RabbitMQ checks three regular expressions per user and virtual host, each matched (unanchored,
PCRE) against the *name* of the queue or exchange an operation touches:

* **configure**: declare or delete it;
* **write**: publish to an exchange, bind a queue (the queue is written to), use an exchange
  as a dead-letter or alternate exchange;
* **read**: consume or get from a queue, bind *from* an exchange (its messages are read).

An application's user ``<prefix>-app-<app>`` gets all three on its own names only::

    ^<prefix>\\.app\\.<app>(?:\\..+)?$

that is its queue ``<prefix>.app.<app>`` and the ``<prefix>.app.<app>.<suffix>`` queues (and
exchanges) later added for it, such as its ``.dlq``. Every name is :func:`re.escape` d: a ``.``
in a name is a literal dot, so app ``a`` matches neither ``<prefix>.app.ab`` nor
``<prefix>Xapp.a``; and application names cannot contain a ``.``, so no application's
``<suffix>`` can be another application's queue. So an application:

* consumes (and acks) its own queues, and no one else's;
* cannot bind anything to ``<prefix>.events`` (binding needs *read* on the exchange), so it
  cannot widen what it receives beyond the claims the router bound for it;
* cannot publish on ``<prefix>.events`` (*write* on the exchange): only the router emits
  events. Its topic permissions on ``<prefix>.events`` (write and read ``^$``) say the same a
  second time should its vhost permissions ever be widened (note that ``^$`` still admits the
  empty routing key, which no event has);
* can publish to exchanges named ``<prefix>.app.<app>.<suffix>``, and an exchange can only
  ever deliver to queues the binder could *write*: an exchange the router declares under the
  application's name and binds to the application's own queues (a retry exchange, say) is a
  way for the application to put messages back into its own queues, and only there.

What an application does **not** get is the default exchange. Publishing to it (exchange
``""``) is checked as *write* on the name ``amq.default`` (RabbitMQ rewrites the empty name
before checking), and *never* against the queue the routing key names: whoever may write
``amq.default`` may put a message into *every* queue of the virtual host (another
application's, ``<prefix>.invalid``). So "publish into its own queues via the default
exchange" cannot be granted without granting "publish into any queue"; this module does not
grant it. The same check guards declaring a queue with ``x-dead-letter-exchange: ""`` (write on
the dead-letter exchange), so an application cannot reach other queues by dead-lettering
either. Retries and dead letters go through broker-side dead-lettering configured by the
router on the queues it declares, or through per-application exchanges as above.

The router's user (when ``router_user`` is given) may configure, write and read everything
under ``<prefix>.`` and additionally write ``amq.default``: it publishes unparseable webhooks
into ``<prefix>.invalid`` through the default exchange.

Passwords are stored as RabbitMQ's ``rabbit_password_hashing_sha256`` hashes:
``base64(salt + sha256(salt + utf8(password)))`` with 4 random salt bytes, so the document
carries no clear-text password.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from router.claims.model import validate_app
from router.contract.names import Names

#: The ``hashing_algorithm`` of every user this module defines.
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
#: Bytes of random salt RabbitMQ's password hashes start with.
SALT_BYTES = 4
#: A permission regex that matches no queue or exchange name (topic permissions: no routing
#: key but the empty one).
NOTHING = "^$"
#: The name RabbitMQ checks permissions on when a client publishes to the default exchange.
DEFAULT_EXCHANGE_RESOURCE = "amq.default"


def generate_password() -> str:
    """A fresh random password (URL-safe: fits in an ``amqp://`` URL unquoted)."""
    return secrets.token_urlsafe(32)


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """``password`` hashed the way RabbitMQ's ``rabbit_password_hashing_sha256`` does."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a RabbitMQ password salt is {SALT_BYTES} bytes, not {len(salt)}")
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def app_permission_regex(names: Names, app: str) -> str:
    """The names an application may configure, write and read: its queues (and exchanges)."""
    return rf"^{re.escape(names.app_queue(validate_app(app)))}(?:\..+)?$"


def app_control_regex(names: Names, app: str) -> str:
    """What an application may write and read: its own names and the control exchange (to
    bind its replicas' control queues and publish its breaker's messages); the topic
    permissions on the control exchange keep both to the application's own routing key."""
    own = rf"{re.escape(names.app_queue(validate_app(app)))}(?:\..+)?"
    return rf"^(?:{own}|{re.escape(names.control_exchange)})$"


def router_permission_regexes(names: Names) -> dict[str, str]:
    """The router's configure/write/read regexes: everything under the prefix."""
    own = rf"^{re.escape(names.prefix)}\."
    write = rf"^(?:{re.escape(names.prefix)}\..*|{re.escape(DEFAULT_EXCHANGE_RESOURCE)})$"
    return {"configure": own, "write": write, "read": own}


def _user(name: str, password: str) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": password_hash(password),
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": [],
    }


def rabbitmq_definitions(
    names: Names,
    apps: Iterable[str],
    *,
    passwords: Mapping[str, str],
    vhost: str = "/",
    router_user: str | None = None,
    router_password: str | None = None,
) -> dict[str, Any]:
    """The users and permissions of ``apps`` (and of the router), as a definitions document.

    ``passwords`` maps each application to its user's password; every application needs one.
    ``router_user`` adds the router's user, with ``router_password``.
    """
    wanted = list(dict.fromkeys(validate_app(app) for app in apps))
    missing = [app for app in wanted if not passwords.get(app)]
    if missing:
        raise ValueError(f"no password for application(s) {', '.join(missing)}")
    if router_user is not None and not router_password:
        raise ValueError(f"no password for the router user {router_user!r}")

    users: list[dict[str, Any]] = []
    permissions: list[dict[str, Any]] = []
    topic_permissions: list[dict[str, Any]] = []
    for app in wanted:
        user = names.app_user(app)
        own = app_permission_regex(names, app)
        with_control = app_control_regex(names, app)
        users.append(_user(user, passwords[app]))
        permissions.append(
            {
                "user": user,
                "vhost": vhost,
                "configure": own,
                "write": with_control,
                "read": with_control,
            }
        )
        topic_permissions.append(
            {
                "user": user,
                "vhost": vhost,
                "exchange": names.events_exchange,
                "write": NOTHING,
                "read": NOTHING,
            }
        )
        its_key = f"^{re.escape(app)}$"
        topic_permissions.append(
            {
                "user": user,
                "vhost": vhost,
                "exchange": names.control_exchange,
                "write": its_key,
                "read": its_key,
            }
        )
    if router_user is not None:
        assert router_password is not None
        users.append(_user(router_user, router_password))
        permissions.append(
            {"user": router_user, "vhost": vhost, **router_permission_regexes(names)}
        )
    return {"users": users, "permissions": permissions, "topic_permissions": topic_permissions}


__all__ = [
    "HASHING_ALGORITHM",
    "app_control_regex",
    "app_permission_regex",
    "generate_password",
    "password_hash",
    "rabbitmq_definitions",
    "router_permission_regexes",
]
