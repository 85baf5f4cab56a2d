"""The worker runtime: handler registration, the middleware pipeline, and the broker loop."""
