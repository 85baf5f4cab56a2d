"""What the console's pages find on their app: the settings it was made with, how to look at
the broker, and Attentive's API settings (when ``ATTENTIVE_API_TOKEN`` is set)."""

from __future__ import annotations

from aiohttp import web

from router.admin.tokens import Tokens
from router.attentive.settings import AttentiveSettings
from router.console.broker import BrokerView
from router.console.sessions import LoginThrottle, Session, Sessions
from router.settings import Settings

#: The router's settings.
SETTINGS = web.AppKey("console_settings", Settings)
#: The console's sessions.
SESSIONS = web.AppKey("console_sessions", Sessions)
#: The session of a request that has one (set by :func:`router.console.guard.require_session`).
SESSION = web.RequestKey("console_session", Session)
#: The admin tokens a login page takes.
TOKENS = web.AppKey("console_tokens", Tokens)
#: Failed logins per client address.
THROTTLE = web.AppKey("console_throttle", LoginThrottle)
#: Where the overview looks at the broker (cached: one look per few seconds).
BROKER = web.AppKey("console_broker", BrokerView)
#: Attentive's API, when its token is set (else absent: no Attentive page).
ATTENTIVE = web.AppKey("console_attentive", AttentiveSettings)

__all__ = ["ATTENTIVE", "BROKER", "SESSION", "SESSIONS", "SETTINGS", "THROTTLE", "TOKENS"]
