"""The webhook port: HTTP/1.1 connections and their limits, the webhook use case (verify,
parse, publish and confirm, or quarantine), probes and metrics, and the service that starts
and stops it."""
