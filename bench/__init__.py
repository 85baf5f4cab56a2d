"""The benchmark suite: ``python -m bench.run`` (``make bench``). Not a test.

Modules: ``run`` (the entry point and the order of the measurements), ``common`` (payloads,
processes, broker helpers), ``loads`` (wrk, the open-loop loadgen, the bench's own client
processes), ``clients`` (bare aio-pika publisher and consumer, the pre-fill, the Python
open-loop sender; each run as its own process), ``e2e_worker`` (the workers it runs with
``attentive-router worker``), ``report`` (targets, the table and the JSON) and ``compare``
(two runs' JSON side by side: ``python -m bench.compare BEFORE.json AFTER.json``).
"""
