"""Per-application state the router keeps for ops: paused by hand, and what the broker says of
its circuit breaker and its queue.

``model`` (pure: an application's state, its status, a pause or resume decided), ``store``
(the persistence protocol) with its ``sqlite`` and ``postgres`` backends in the claims
database, ``open`` (the store a database URL names), ``broker`` (a look at the application
queues and probe locks, and the control message published with a confirm), ``service``
(pause and resume: store, audit, tell every replica), ``metrics`` (paused and for how long).
"""
