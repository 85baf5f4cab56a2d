"""attentive-router: signed Attentive webhooks in, durable RabbitMQ events out."""

__version__ = "0.1.0"
