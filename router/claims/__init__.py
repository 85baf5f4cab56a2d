"""The claim registry: one application per event type per company.

``model`` (pure: patterns, overlap, binding keys), ``store`` (the persistence protocol and
its SQLite and PostgreSQL backends), ``service`` (grant/revoke, keeping broker bindings in
step with the claims).
"""
