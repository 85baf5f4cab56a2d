"""Parked events: dead letters, unrouted and invalid events, kept in a database for ops.

:mod:`~router.parked.model` says what an entry keeps, :mod:`~router.parked.query` which
entries ops ask about, :mod:`~router.parked.store` the protocol of the SQLite and PostgreSQL
backends, and :func:`~router.parked.open.parked_store_from_url` picks one from a URL.
"""
