"""RabbitMQ: connecting to the first node that answers, the URL, topology, permissions, queue
depths, and the publish path (frames, the confirming publisher, the reconnecting broker)."""
