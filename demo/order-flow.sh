#!/usr/bin/env bash
# The seed's order flow on evhost, against the real daemon:
#   builds the four order-flow plugins and evhost, starts `evhost run` with
#   demo/plugins/*.toml as sidecars, registers demo/schemas with
#   `evhost schema put`, shows an invalid order refused (422), publishes three
#   orders (payable, card declined, out of stock), waits until each customer
#   was notified, prints every topic and the plugins, and stops the daemon.
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
for p in inventory payment order-saga notification; do
  cp "$wasm/${p//-/_}.wasm" "$work/plugins/$p.wasm"
  cp "$root/demo/plugins/$p.toml" "$work/plugins/$p.toml"
done

step "starting evhost run (plugins and sidecars in $work/plugins)"
"$evhost" run --data "$work/data" --plugins "$work/plugins" --listen 127.0.0.1:0 \
  >"$work/evhost.out" 2>"$work/evhost.log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null' EXIT
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

step "stopping the daemon (SIGTERM)"
kill -TERM "$pid"
wait "$pid"
trap - EXIT
echo "done; the daemon's log is in $work/evhost.log"
