"""A client of Attentive's Webhooks API: list, create, update and delete webhooks.

``https://api.attentivemobile.com/v1`` with an OAuth bearer token that has the
``webhooks:write`` scope. The client copes with the API's quirks:

- a create answer may omit the new webhook's ``id``: the client finds it by listing
  (same url and events, not among the webhooks that existed before) and says so;
- ``PUT`` needs ``url``, ``events`` and ``disabled`` together (callers merge, see the CLI);
- 429, 5xx, timeouts and connection failures are retried a bounded number of times with
  exponential backoff, honouring ``Retry-After``. A create is not blindly repeated when its
  first try may have taken effect (5xx, timeout, dropped connection): the client first lists,
  and a webhook that appeared counts as created, so a retry never makes a duplicate webhook.

The token lives only in the session's ``Authorization`` header: no error, log line or repr
carries it (answers quoted in errors are scrubbed of it too).
"""

from router.attentive.client import AttentiveClient
from router.attentive.errors import (
    AttentiveAuthError,
    AttentiveError,
    AttentiveNotFound,
    AttentiveProtocolError,
    AttentiveRejected,
    AttentiveUnavailable,
    InvalidWebhookInput,
)
from router.attentive.settings import DEFAULT_API_URL, WEBHOOKS_SCOPE, AttentiveSettings
from router.attentive.webhooks import (
    Created,
    Webhook,
    resolve_events,
    subscription_url,
    validate_webhook_url,
)

__all__ = [
    "DEFAULT_API_URL",
    "WEBHOOKS_SCOPE",
    "AttentiveAuthError",
    "AttentiveClient",
    "AttentiveError",
    "AttentiveNotFound",
    "AttentiveProtocolError",
    "AttentiveRejected",
    "AttentiveSettings",
    "AttentiveUnavailable",
    "Created",
    "InvalidWebhookInput",
    "Webhook",
    "resolve_events",
    "subscription_url",
    "validate_webhook_url",
]
