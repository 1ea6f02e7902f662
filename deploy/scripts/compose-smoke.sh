#!/usr/bin/env bash
# compose-smoke: the compose deployment end to end, on this machine, without pulling any image.
#
#   bash deploy/scripts/compose-smoke.sh
#
# 1. builds the static `playground` (target/static) and the image from deploy/Dockerfile.static (FROM
#    scratch), then `docker-compose up -d` of deploy/docker-compose.yaml under a unique project name;
# 2. drives the API through both gateways with curl (register on one, log in on the other, create and pay
#    an order, read it back through the other);
# 3. `docker kill`s a node while a writer keeps creating orders: new writes must succeed within a
#    deadline, and no acknowledged write may be lost;
# 4. starts the node again, at another address (a stand-in takes its old one): it must rejoin (`/v1/cluster`: every member `up`) and every order
#    acknowledged before and during the kill must be readable;
# 5. tears everything down (containers, network, volumes, the image) whatever happened.
#
# Runs unattended (CI=true, no stdin). Needs docker, docker-compose (v1), cargo, curl and python3. The
# last line is the summary: `compose-smoke: N passed, M failed`; the exit status is 0 only if M is 0.
# Environment: SMOKE_KEEP_IMAGE=1 keeps the image; PLAYGROUND_GATEWAY_1_PORT / _2_PORT choose the host
# ports (default 8080 and 8081, or free ports if those are taken).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)

STARTED=$SECONDS
PASSED=0
FAILED=0
PROJECT="pgsmoke-$$-$(date +%s)"
IMAGE="microservices-playground:smoke-$PROJECT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compose-smoke.XXXXXX")
COMPOSE=(docker-compose --no-ansi -f "$ROOT/deploy/docker-compose.yaml" -p "$PROJECT")
STACK_UP=0
TORN_DOWN=0
WRITER_PID=
SQUATTER=
KILLED=node-1

export PLAYGROUND_IMAGE="$IMAGE"
export PLAYGROUND_SECRETS_FILE="$WORK/secrets.env"
export COMPOSE_INTERACTIVE_NO_CLI=1

say() { printf '[%4ds] %s\n' $((SECONDS - STARTED)) "$*"; }
pass() { PASSED=$((PASSED + 1)); say "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL $*"; }
# A failed step the rest depends on: count it and stop (the EXIT trap tears down and prints the summary).
die() { fail "$*"; exit 1; }

trap 'say "error: line $LINENO: $BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------------------------- helpers

# wait_until SECONDS COMMAND...: polls COMMAND every 0.5 s until it succeeds (0) or the deadline passes (1).
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  while :; do
    if "$@"; then return 0; fi
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.5
  done
}

# req METHOD URL BODY TOKEN [HEADER...]: one HTTP call; sets CODE (000 if no answer) and BODY.
req() {
  local method=$1 url=$2 body=$3 token=$4
  shift 4
  # One body file per process: the background writer calls this too.
  local out="$WORK/body.$BASHPID"
  local args=(-sS -m 10 -o "$out" -w '%{http_code}' -X "$method")
  if [ -n "$body" ]; then args+=(-H 'content-type: application/json' --data "$body"); fi
  if [ -n "$token" ]; then args+=(-H "authorization: Bearer $token"); fi
  local h
  for h in "$@"; do args+=(-H "$h"); done
  rm -f "$out"
  CODE=$(curl "${args[@]}" "$url" </dev/null 2>/dev/null) || CODE=000
  BODY=$(cat "$out" 2>/dev/null || true)
}

# field NAME: a top-level field of the JSON in BODY ("" if absent or not JSON).
field() {
  python3 -c 'import json, sys
try:
    v = json.loads(sys.argv[1]).get(sys.argv[2], "")
except Exception:
    v = ""
print(v if isinstance(v, str) else json.dumps(v))' "$BODY" "$1"
}

cid() { "${COMPOSE[@]}" ps -q "$1" 2>/dev/null </dev/null; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
healthy() { [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null)" = healthy ]; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | xargs; }

ready() { req GET "$1/readyz" "" ""; [ "$CODE" = 200 ]; }
all_healthy() {
  local s
  for s in node-1 node-2 node-3 gateway-1 gateway-2; do healthy "$(cid "$s")" || return 1; done
}
# every member of /v1/cluster (through gateway $1) is `up`
members_up() {
  req GET "$1/v1/cluster" "" "$ADMIN"
  [ "$CODE" = 200 ] || return 1
  python3 -c 'import json, sys
m = json.loads(sys.argv[1]).get("members", [])
sys.exit(0 if len(m) >= 3 and all(x.get("state") == "up" for x in m) else 1)' "$BODY"
}
member_states() {
  python3 -c 'import json, sys
try:
    members = json.loads(sys.argv[1]).get("members", [])
except Exception:
    members = []
print(" ".join("%s=%s" % (m.get("id"), m.get("state")) for m in members) or "no answer")' "$BODY"
}

# create_order GATEWAY TOKEN KEY: POST /v1/orders with Idempotency-Key KEY; sets CODE, BODY.
create_order() {
  req POST "$1/v1/orders" '{"items":[{"sku":"SMOKE-1","quantity":2,"unit_price_cents":1250}]}' "$2" "idempotency-key: $3"
}

# create_until SECONDS GATEWAY TOKEN KEY: repeats the create (same key: retry-safe) until 201; prints the id.
create_until() {
  local deadline=$((SECONDS + $1))
  while :; do
    create_order "$2" "$3" "$4"
    if [ "$CODE" = 201 ]; then field id; return 0; fi
    if ((SECONDS >= deadline)); then
      echo "last answer: $CODE $BODY" >&2
      return 1
    fi
    sleep 0.2
  done
}

# The background writer: orders for TOKEN through both gateways in turn, one idempotency key per order
# (retried until acknowledged, so an unknown outcome is never counted twice or lost from the list); every
# acknowledged order goes to $WORK/acked as "id token". Stops when $WORK/stop exists.
writer() {
  set +e
  trap - ERR
  local token=$1 n=0 gw id
  while [ ! -e "$WORK/stop" ]; do
    n=$((n + 1))
    if ((n % 2)); then gw=$G1; else gw=$G2; fi
    for _ in $(seq 1 100); do
      create_order "$gw" "$token" "writer-$n"
      if [ "$CODE" = 201 ]; then
        id=$(field id)
        echo "$id $token" >>"$WORK/acked"
        break
      fi
      echo "$(date +%s.%N) writer-$n $CODE" >>"$WORK/writer-errors"
      [ -e "$WORK/stop" ] && break
      sleep 0.2
    done
    sleep 0.1
  done
}

teardown() {
  [ "$TORN_DOWN" = 1 ] && return 0
  TORN_DOWN=1
  if [ -n "$WRITER_PID" ]; then
    touch "$WORK/stop"
    kill "$WRITER_PID" 2>/dev/null || true
    wait "$WRITER_PID" 2>/dev/null || true
  fi
  if [ -n "$SQUATTER" ]; then docker rm -f -v "$SQUATTER" >/dev/null 2>&1 || true; fi
  if [ "$STACK_UP" = 1 ]; then
    say "tearing down project $PROJECT"
    timeout 120 "${COMPOSE[@]}" down -v --remove-orphans -t 20 </dev/null >"$WORK/down.log" 2>&1 || true
    local left
    left=$(
      docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
      docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
      docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"
    )
    if [ -z "$left" ]; then
      pass "teardown: no container, network or volume of $PROJECT left"
    else
      fail "teardown: left behind: $(echo "$left" | xargs)"
    fi
  fi
  if [ "${SMOKE_KEEP_IMAGE:-0}" != 1 ]; then docker image rm -f "$IMAGE" >/dev/null 2>&1 || true; fi
}

on_exit() {
  local rc=$?
  trap - EXIT ERR
  set +e
  if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then FAILED=1; fi
  if [ "$FAILED" != 0 ] && [ "$STACK_UP" = 1 ] && [ "$TORN_DOWN" = 0 ]; then
    say "logs of the failed run (last 40 lines per service):"
    timeout 60 "${COMPOSE[@]}" logs --no-color --tail=40 </dev/null 2>&1 | sed 's/^/    /'
    [ -s "$WORK/writer-errors" ] && { say "writer errors:"; tail -n 20 "$WORK/writer-errors" | sed 's/^/    /'; }
  fi
  teardown
  rm -rf "$WORK"
  say "took $((SECONDS - STARTED)) s"
  echo "compose-smoke: $PASSED passed, $FAILED failed"
  if [ "$FAILED" = 0 ]; then exit 0; else exit 1; fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------- preflight
for tool in docker docker-compose cargo curl python3; do
  command -v "$tool" >/dev/null 2>&1 || die "preflight: $tool is not installed"
done
docker info >/dev/null 2>&1 </dev/null || die "preflight: the Docker daemon does not answer"

# A free host port: the wanted one if nothing listens there, else one the kernel picks.
free_port() {
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "$1"
  else
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  fi
}
PLAYGROUND_GATEWAY_1_PORT=${PLAYGROUND_GATEWAY_1_PORT:-$(free_port 8080)}
PLAYGROUND_GATEWAY_2_PORT=${PLAYGROUND_GATEWAY_2_PORT:-$(free_port 8081)}
export PLAYGROUND_GATEWAY_1_PORT PLAYGROUND_GATEWAY_2_PORT
G1="http://127.0.0.1:$PLAYGROUND_GATEWAY_1_PORT"
G2="http://127.0.0.1:$PLAYGROUND_GATEWAY_2_PORT"

# Fresh secrets for this run only.
secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
ADMIN=$(secret)
(
  umask 077
  printf 'PLAYGROUND_COOKIE=%s\nPLAYGROUND_TOKEN_KEY=%s\nPLAYGROUND_ADMIN_TOKEN=%s\n' "$(secret)" "$(secret)" "$ADMIN" \
    >"$PLAYGROUND_SECRETS_FILE"
)

# ------------------------------------------------------------------------------ 1. build and start
say "building the static binary (target/static)"
BIN="$ROOT/target/static/x86_64-unknown-linux-gnu/release/playground"
CARGO_TARGET_DIR="$ROOT/target/static" RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu -p nodes </dev/null ||
  die "build: cargo build of the static binary failed"
if ldd "$BIN" 2>/dev/null | grep -q '=>'; then die "build: $BIN is not static"; fi
pass "build: static binary $(du -h "$BIN" | cut -f1)"
# A production build carries no test-only fault switch: not their names, and it refuses them at start.
SWITCHES='PLAYGROUND_(PANIC_INJECTION|BREAK_IDEMPOTENCY|STALE_READS|CLOCK_SKEW_MS)'
if strings "$BIN" | grep -Eq "$SWITCHES"; then die "build: $BIN contains a fault switch's name"; fi
refusal=$(env -i PLAYGROUND_PANIC_INJECTION=true "$BIN" node 2>&1 </dev/null) &&
  die "build: the production binary started with PLAYGROUND_PANIC_INJECTION set"
[ "$(printf '%s\n' "$refusal" | wc -l)" -eq 1 ] && printf '%s' "$refusal" | grep -q 'PLAYGROUND_PANIC_INJECTION' ||
  die "build: the refusal is not one line naming the variable: $refusal"
pass "build: no fault switch in the production binary; setting one is refused: $refusal"

mkdir -p "$WORK/image/data"
cp "$BIN" "$WORK/image/playground"
docker build -q -f deploy/Dockerfile.static -t "$IMAGE" "$WORK/image" </dev/null >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log"; die "image: docker build -f deploy/Dockerfile.static failed"; }
user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
[ "$user" = "10001:10001" ] || die "image: runs as '$user', not 10001:10001"
version=$(docker run --rm --network none "$IMAGE" --version </dev/null 2>&1) || die "image: playground --version: $version"
pass "image: $IMAGE built from scratch (no pull), user $user, $version"

say "starting project $PROJECT (gateways on $G1 and $G2)"
STACK_UP=1
timeout 180 "${COMPOSE[@]}" up -d --no-build </dev/null >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log"; die "compose: up -d failed"; }
pass "compose: up -d (3 nodes, 2 gateways)"
[ -z "$(cid prometheus)$(cid grafana)" ] || fail "compose: monitoring started without its profile"

wait_until 120 ready "$G1" || die "ready: gateway-1 /readyz not 200 within 120 s (last: $CODE $BODY)"
wait_until 60 ready "$G2" || die "ready: gateway-2 /readyz not 200 within 60 s (last: $CODE $BODY)"
pass "ready: both gateways answer /readyz 200"
wait_until 60 all_healthy || die "health: not every container is healthy within 60 s"
pass "health: the image's HEALTHCHECK (playground health) reports every container healthy"

# -------------------------------------------------------------------------- 2. the API through both
RUN=$(date +%s)-$$
EMAIL="ada-$RUN@example.com"
req POST "$G1/v1/users" "{\"email\":\"$EMAIL\",\"name\":\"Ada\",\"password\":\"correct horse\"}" ""
[ "$CODE" = 201 ] || die "api: register on gateway-1: $CODE $BODY"
USER_ID=$(field id)
req POST "$G2/v1/sessions" "{\"email\":\"$EMAIL\",\"password\":\"correct horse\"}" ""
[ "$CODE" = 201 ] || die "api: login on gateway-2: $CODE $BODY"
TOKEN=$(field token)
pass "api: registered $USER_ID through gateway-1, logged in through gateway-2"

create_order "$G1" "$TOKEN" "first-$RUN"
[ "$CODE" = 201 ] || die "api: create order on gateway-1: $CODE $BODY"
ORDER=$(field id)
req POST "$G2/v1/orders/$ORDER/pay" "" "$TOKEN"
[ "$CODE" = 200 ] && [ "$(field status)" = paid ] || die "api: pay on gateway-2: $CODE $BODY"
req GET "$G1/v1/orders/$ORDER" "" "$TOKEN"
[ "$CODE" = 200 ] && [ "$(field status)" = paid ] || die "api: read back on gateway-1: $CODE $BODY"
req GET "$G2/v1/orders/$ORDER" "" "$TOKEN"
[ "$CODE" = 200 ] && [ "$(field status)" = paid ] || die "api: read back on gateway-2: $CODE $BODY"
pass "api: order $ORDER created on gateway-1, paid on gateway-2, read back paid on both"
echo "$ORDER $TOKEN" >"$WORK/acked"

# More users, so that their shards are led by different nodes, each with an order before the kill.
TOKENS=()
for i in 1 2 3 4 5; do
  req POST "$G2/v1/users" "{\"email\":\"u$i-$RUN@example.com\",\"name\":\"U$i\",\"password\":\"correct horse\"}" ""
  [ "$CODE" = 201 ] || die "api: register user $i: $CODE $BODY"
  req POST "$G1/v1/sessions" "{\"email\":\"u$i-$RUN@example.com\",\"password\":\"correct horse\"}" ""
  [ "$CODE" = 201 ] || die "api: login user $i: $CODE $BODY"
  TOKENS+=("$(field token)")
  id=$(create_until 10 "$G1" "${TOKENS[-1]}" "before-$i-$RUN") || die "api: order before the kill for user $i (see the last answer above)"
  echo "$id ${TOKENS[-1]}" >>"$WORK/acked"
done
pass "api: 5 more users with an order each, through both gateways"

# ------------------------------------------------------------------------------ 3. kill a node
members_up "$G1" || die "cluster: not every member up before the kill: $(member_states)"
writer "$TOKEN" &
WRITER_PID=$!
sleep 2
VICTIM=$(cid "$KILLED")
IP_BEFORE=$(ip_of "$VICTIM")
docker kill "$VICTIM" </dev/null >/dev/null || die "kill: docker kill $KILLED failed"
KILLED_AT=$SECONDS
say "killed $KILLED ($IP_BEFORE)"
if running "$VICTIM"; then
  say "note: $KILLED is running again already (restart policy)"
else
  pass "kill: $KILLED is down"
fi

# New writes, for every user (their shards' leaders may have been on the killed node), within 30 s.
i=0
for t in "${TOKENS[@]}"; do
  i=$((i + 1))
  gw=$G1
  ((i % 2)) || gw=$G2
  id=$(create_until 30 "$gw" "$t" "during-$i-$RUN") || die "failover: no write for user $i within 30 s of the kill (see the last answer above)"
  echo "$id $t" >>"$WORK/acked"
done
pass "failover: a new write for each of 5 users succeeded $((SECONDS - KILLED_AT)) s after the kill"
sleep 3
touch "$WORK/stop"
wait "$WRITER_PID" || true
WRITER_PID=
writes=$(grep -c . "$WORK/acked")
pass "failover: writer kept writing through the kill ($writes orders acknowledged in all)"

# ---------------------------------------------------------------------------- 4. restart and rejoin
# Bring the node back at another address, as a rescheduled container would be: while it is detached, a
# stand-in container takes its old address; its peers must find it again by name (seeds are resolved at
# every dial).
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$VICTIM" | awk '{print $1}')
if running "$VICTIM"; then
  say "note: $KILLED restarted on its own; it keeps its address"
else
  docker network disconnect "$NET" "$VICTIM" </dev/null >/dev/null || die "restart: network disconnect failed"
  SQUATTER=$(docker run -d --rm --network "$NET" --label "compose-smoke=$PROJECT" "$IMAGE" </dev/null) ||
    die "restart: the stand-in container did not start"
  docker network connect --alias "$KILLED" "$NET" "$VICTIM" </dev/null >/dev/null || die "restart: network connect failed"
  docker start "$VICTIM" </dev/null >/dev/null || die "restart: docker start $KILLED failed"
fi
IP_AFTER=$(ip_of "$VICTIM")
if [ "$IP_AFTER" != "$IP_BEFORE" ]; then
  pass "restart: $KILLED is back at $IP_AFTER (was $IP_BEFORE; its old address belongs to a stand-in)"
else
  say "note: $KILLED came back at its old address $IP_AFTER"
fi
wait_until 90 members_up "$G1" || die "rejoin: /v1/cluster not all up within 90 s: $(member_states)"
pass "rejoin: /v1/cluster through gateway-1 shows every member up ($(member_states))"
wait_until 60 members_up "$G2" || die "rejoin: /v1/cluster through gateway-2 not all up within 60 s: $(member_states)"
pass "rejoin: /v1/cluster through gateway-2 shows every member up"
node_ready() { docker exec "$VICTIM" /usr/local/bin/playground health --ready >/dev/null 2>&1 </dev/null; }
wait_until 60 node_ready || die "rejoin: $KILLED /readyz not 200 within 60 s"
pass "rejoin: $KILLED is ready (playground health --ready inside the container)"
if [ -n "$SQUATTER" ]; then
  docker rm -f -v "$SQUATTER" >/dev/null 2>&1 || true
  SQUATTER=
fi

lost=0
n=0
while read -r id token; do
  n=$((n + 1))
  gw=$G2
  ((n % 2)) || gw=$G1
  req GET "$gw/v1/orders/$id" "" "$token"
  if [ "$CODE" != 200 ]; then
    lost=$((lost + 1))
    say "order $id: $CODE $BODY"
  fi
done <"$WORK/acked"
[ "$lost" = 0 ] || die "durability: $lost of $n acknowledged orders not readable after the restart"
req GET "$G2/v1/orders/$ORDER" "" "$TOKEN"
[ "$CODE" = 200 ] && [ "$(field status)" = paid ] || die "durability: the first order is not paid: $CODE $BODY"
pass "durability: all $n orders acknowledged before and during the kill are readable"

# New work after the rejoin, through the restarted cluster.
id=$(create_until 15 "$G2" "$TOKEN" "after-$RUN") || die "after: create (see the last answer above)"
req GET "$G1/v1/orders/$id" "" "$TOKEN"
[ "$CODE" = 200 ] || die "after: read back: $CODE $BODY"
pass "after: writes and reads go on after the rejoin"

# ------------------------------------------------------------------------------------ 5. tear down
teardown
