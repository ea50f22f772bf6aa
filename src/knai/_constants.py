"""Every default of the SDK in one place: where it sends, how long, how often, how much.

Nothing here imports more than httpx, so any module may read it.
"""

from __future__ import annotations

import httpx

from ._version import __version__

__all__ = [
    "CHARGE_PATH",
    "DEFAULT_BASE_URL",
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "KEEP_RAW_BYTES",
    "MAX_CONNECTIONS_LIMIT",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE",
    "MAX_RESPONSE_BYTES",
    "RETRYABLE_STATUSES",
    "STATUS_PATH",
    "USER_AGENT",
]

# -- where ----------------------------------------------------------------------------------
DEFAULT_BASE_URL = "https://api.conx.ai"
STATUS_PATH = "/providers/session/status"
CHARGE_PATH = "/charge/authorize"
USER_AGENT = f"knai-provider/{__version__} httpx/{httpx.__version__}"

# -- how long -------------------------------------------------------------------------------
#: Per attempt: 30 s for each read and write, 5 s to connect.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_POLL_INTERVAL = 1.5

# -- how often ------------------------------------------------------------------------------
DEFAULT_MAX_RETRIES = 2
DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 8.0
#: A server asking for a longer pause than this is not waited for: the error is raised.
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_JITTER = 0.25
#: Statuses that say "try again": timeout, rate limit, transient server errors.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# -- how much -------------------------------------------------------------------------------
#: Connections the SDK's own pool may open (httpx's default pool limit).
DEFAULT_MAX_CONNECTIONS = 100
MAX_CONNECTIONS_LIMIT = 1000
#: The protocol's payloads are tiny: a body larger than this is refused, not buffered.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: How much of an unreadable body an error keeps for diagnosis.
KEEP_RAW_BYTES = 64 * 1024
#: An HTML error page is not a message: longer ones are cut.
MAX_MESSAGE = 300
#: Protocol payloads are two levels deep; deeper JSON is refused before it is parsed,
#: so no view of it (str, repr, deepcopy, pickle) can hit the recursion limit.
MAX_JSON_DEPTH = 32
