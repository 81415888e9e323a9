#!/usr/bin/env bash
# The seed's order flow on evhost, against the real daemon:
#   builds the four order-flow plugins and evhost, starts `evhost run` with
#   demo/plugins/*.toml as sidecars, registers demo/schemas with
#   `evhost schema put`, shows an invalid order refused (422), publishes three
#   orders (payable, card declined, out of stock), waits until each customer
#   was notified, prints every topic and the plugins; then a payment gateway
#   outage: the payment is retried with backoff, the breaker pauses the plugin,
#   the gateway recovers and the order is charged once. Stops the daemon.
#   `payment` charges at a fake gateway (cargo xtask gateway) on a free
#   loopback port, granted in its sidecar.
# Needs bash and the Rust toolchain. Run from anywhere: demo/order-flow.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$root/target/order-demo"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ evhost %s\n' "$*"; "$evhost" "$@"; }

step "building the plugins (wasm32-wasip2) and evhost"
cargo xtask plugins
cargo build --quiet -p evhost
evhost="$root/target/debug/evhost"
wasm="$root/target/plugins/wasm32-wasip2/plugin"

rm -rf "$work"
mkdir -p "$work/plugins"

step "starting the fake payment gateway (cargo xtask gateway) on a free port"
"$root/target/debug/xtask" gateway 127.0.0.1:0 >"$work/gateway.out" 2>&1 &
gateway_pid=$!
for _ in $(seq 100); do
  gateway="$(sed -n 's/^gateway listening on http:\/\///p' "$work/gateway.out")"
  [ -n "$gateway" ] && break
  sleep 0.1
done
[ -n "$gateway" ] || { echo "the gateway did not start" >&2; cat "$work/gateway.out"; exit 1; }
echo "gateway at http://$gateway"
# Talks to the gateway with bash alone: METHOD PATH -> the answer's body.
gw() {
  exec 3<>"/dev/tcp/${gateway%:*}/${gateway##*:}"
  printf '%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n' "$1" "$2" "$gateway" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

for p in inventory payment order-saga notification; do
  cp "$wasm/${p//-/_}.wasm" "$work/plugins/$p.wasm"
  # The sidecars name the gateway at 127.0.0.1:9000: grant its real address.
  sed "s/127\.0\.0\.1:9000/$gateway/g" "$root/demo/plugins/$p.toml" >"$work/plugins/$p.toml"
done
echo "# $work/plugins/payment.toml"
cat "$work/plugins/payment.toml"

step "starting evhost run (plugins and sidecars in $work/plugins)"
"$evhost" run --data "$work/data" --plugins "$work/plugins" --listen 127.0.0.1:0 \
  >"$work/evhost.out" 2>"$work/evhost.log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; kill "$gateway_pid" 2>/dev/null' EXIT
for _ in $(seq 600); do
  server="$(sed -n 's/^listening on //p' "$work/evhost.out")"
  [ -n "$server" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/evhost.out" "$work/evhost.log"; exit 1; }
  sleep 0.2
done
[ -n "$server" ] || { echo "evhost run did not start listening" >&2; exit 1; }
export EVHOST_SERVER="$server"
cat "$work/evhost.out"

step "registering the schemas of demo/schemas"
for file in demo/schemas/*/*.json; do
  ty="$(basename "$(dirname "$file")")"
  "$evhost" schema put "$ty" "$(basename "$file" .json)" "$file" >/dev/null
done
show schema list

step "an order that violates its schema is refused, naming the failing path"
bad='{"orderId":"o-bad","customerId":"ada","totalAmount":5,"items":[{"productId":"apple","quantity":0}]}'
if show publish --type order.created --key o-bad --data "$bad"; then
  echo "expected a 422" >&2
  exit 1
fi

step "three orders: payable, card declined, out of stock (3 plums in stock)"
show publish --type order.created --key o-1001 --data \
  '{"orderId":"o-1001","customerId":"ada","totalAmount":42.5,"cardToken":"tok_visa","items":[{"productId":"apple","quantity":2}]}'
show publish --type order.created --key o-1002 --data \
  '{"orderId":"o-1002","customerId":"bob","totalAmount":30,"cardToken":"tok_declined","items":[{"productId":"pear","quantity":5}]}'
show publish --type order.created --key o-1003 --data \
  '{"orderId":"o-1003","customerId":"cyd","totalAmount":12,"items":[{"productId":"plum","quantity":5}]}'

step "waiting until every customer was notified"
for _ in $(seq 300); do
  sent="$("$evhost" tail notification-events --json 2>/dev/null | grep -o '"notification.sent"' | wc -l || true)"
  released="$("$evhost" tail inventory-events --json 2>/dev/null | grep -o '"inventory.released"' | wc -l || true)"
  [ "$sent" -ge 3 ] && [ "$released" -ge 1 ] && break
  sleep 0.1
done
[ "$sent" -ge 3 ] || { echo "the flow did not finish; see $work/evhost.log" >&2; exit 1; }

step "the whole flow, topic by topic (the subject is the order id)"
for topic in order-events inventory-events payment-events notification-events; do
  show tail "$topic"
done

step "the declined order o-1002 in time order: one correlation id, each event naming its cause"
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }
for topic in order-events inventory-events payment-events notification-events; do
  "$evhost" tail "$topic" --json
done | grep '"subject":"o-1002"' | while IFS= read -r line; do
  printf '%s  %-28s id %-40s caused by %-40s flow %s\n' "$(field time "$line")" \
    "$(field type "$line")" "$(field id "$line")" "$(field causationid "$line")" \
    "$(field correlationid "$line")"
done | sort | cut -d' ' -f3-

step "the plugins"
show plugins

step "a gateway outage: the next 10 charge requests fail with 503"
gw POST "/outage?requests=10"; echo
show publish --type order.created --key o-1004 --data \
  '{"orderId":"o-1004","customerId":"dee","totalAmount":7,"cardToken":"tok_visa","items":[{"productId":"apple","quantity":1}]}'
echo "payment retries with backoff (0.1 s doubling to 1 s); after 10 failures in a row the breaker pauses it"
for _ in $(seq 300); do
  "$evhost" plugins 2>/dev/null | grep -q '^payment .*paused' && break
  sleep 0.1
done
show plugins
echo "the gateway is back; after the 30 s cool-down one probe call decides"
for _ in $(seq 600); do
  sent="$("$evhost" tail notification-events --json 2>/dev/null | grep -o '"notification.sent"' | wc -l || true)"
  [ "$sent" -ge 4 ] && break
  sleep 0.1
done
[ "$sent" -ge 4 ] || { echo "o-1004 did not finish; see $work/evhost.log" >&2; exit 1; }
"$evhost" tail payment-events --json | grep '"subject":"o-1004"' || true
echo "the gateway's count: every order charged once, under one idempotency key each"
gw GET /stats; echo
show plugins

step "stopping the daemon (SIGTERM)"
kill -TERM "$pid"
wait "$pid"
trap - EXIT
kill "$gateway_pid" 2>/dev/null || true
echo "done; the daemon's log is in $work/evhost.log"
