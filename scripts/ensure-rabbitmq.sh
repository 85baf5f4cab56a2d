#!/usr/bin/env bash
# Makes sure RabbitMQ answers on ROUTER_AMQP_URL's host and port (default 127.0.0.1:5672):
# starts a local rabbitmq-server when one is installed but stopped, and says what to do when none is.
set -euo pipefail
url=${ROUTER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}
[ "$port" = "$hostport" ] && port=5672
[ "$host" = localhost ] && host=127.0.0.1

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
answers && exit 0
case "$host" in
  127.*|::1) ;;
  *) echo "RabbitMQ at $host:$port does not answer; check ROUTER_AMQP_URL." >&2; exit 1 ;;
esac
if ! command -v rabbitmq-server >/dev/null; then
  cat >&2 <<MSG
RabbitMQ is not running on $host:$port and rabbitmq-server is not installed.
Either install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server),
or start one in Docker: docker compose up -d rabbitmq,
or point ROUTER_AMQP_URL at a RabbitMQ you have.
MSG
  exit 1
fi
echo "RabbitMQ is not answering on $host:$port; starting the local rabbitmq-server..." >&2
rabbitmq-server -detached
for _ in $(seq 1 60); do
  if timeout 30 rabbitmqctl status >/dev/null 2>&1 && answers; then
    echo "RabbitMQ is up." >&2
    exit 0
  fi
  sleep 1
done
echo "rabbitmq-server did not come up within 60 s; see its logs (/var/log/rabbitmq)." >&2
exit 1
