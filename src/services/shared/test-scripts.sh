#!/usr/bin/env bash
# Tests the Redis Lua scripts in this directory with redis-cli, then measures them.
#
# Functional tests run against the shared Redis at 127.0.0.1:${KQLGATE_TEST_REDIS_PORT:-6379},
# using only keys under "kqlgate-test-scripts:<run>:" and deleting them at the end (never a
# FLUSH, never a CONFIG change there). A private master + replica on free ports 6390+ check
# that TIME-based scripts replicate their effects, and the benchmarks run there too, so the
# shared server sees no load and its statistics are left alone.
#
#   ./test-scripts.sh                      all tests and the benchmark
#   KQLGATE_TEST_NO_BENCH=1 ./test-scripts.sh    tests only
#
# Exits non-zero on any failure or if any test key is left behind.

set -u -o pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOST=127.0.0.1
PORT=${KQLGATE_TEST_REDIS_PORT:-6379}
RUN="kqlgate-test-scripts:$$-$RANDOM:"
TMP=$(mktemp -d)
SCRIPTS=(gcra lease_acquire lease_renew lease_release cluster_acquire cluster_release)
declare -A SHA
MASTER_PORT=""
REPLICA_PORT=""
BG_PIDS=()
passes=0
fails=0

rc() { redis-cli -h "$HOST" -p "$PORT" "$@"; }
ok() { passes=$((passes + 1)); printf '  ok    %s\n' "$1"; }
bad() { fails=$((fails + 1)); printf '  FAIL  %s\n' "$1"; }
# expect DESCRIPTION ACTUAL EXPECTED
expect() { if [[ "$2" == "$3" ]]; then ok "$1 -> $2"; else bad "$1: got '$2', want '$3'"; fi; }
# check DESCRIPTION ARITHMETIC-CONDITION SHOWN
check() { if (($2)); then ok "$1 -> $3"; else bad "$1: $3 (want $2)"; fi; }
section() { printf '\n== %s\n' "$1"; }

# ev SCRIPT NUMKEYS KEY... ARG...: the reply on one line, elements separated by spaces.
# Reloads the script once on NOSCRIPT, as the redis crate's Script does.
ev() {
  local name=$1 out
  shift
  out=$(rc EVALSHA "${SHA[$name]}" "$@" 2>&1)
  if [[ $out == NOSCRIPT* ]]; then
    SHA[$name]=$(rc SCRIPT LOAD "$(cat "$DIR/$name.lua")")
    out=$(rc EVALSHA "${SHA[$name]}" "$@" 2>&1)
  fi
  echo $out
}

now_us() { local t; t=$(rc TIME | tr '\n' ' '); set -- $t; echo $(($1 * 1000000 + $2)); }

free_port() {
  local p=$1
  while (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

cleanup() {
  local status=$?
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  # Delete this run's keys on the shared server (SCAN + UNLINK: nothing else is touched).
  rc --scan --pattern "${RUN}*" | while read -r k; do rc UNLINK "$k" >/dev/null; done
  local left
  left=$(rc --scan --pattern "${RUN}*" | wc -l)
  for p in $REPLICA_PORT $MASTER_PORT; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1
  done
  rm -rf "$TMP"
  if ((left != 0)); then
    echo "FAIL: $left test keys left behind on $HOST:$PORT"
    status=1
  else
    echo "no test keys left behind on $HOST:$PORT"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_scripts() {
  for s in "${SCRIPTS[@]}"; do
    SHA[$s]=$(rc SCRIPT LOAD "$(cat "$DIR/$s.lua")")
    if [[ ! ${SHA[$s]} =~ ^[0-9a-f]{40}$ ]]; then
      echo "cannot load $s.lua: ${SHA[$s]}"
      exit 1
    fi
  done
}

rc PING >/dev/null || { echo "no Redis at $HOST:$PORT"; exit 1; }
echo "Redis $(rc INFO server | tr -d '\r' | sed -n 's/^redis_version://p') at $HOST:$PORT, keys under $RUN"
load_scripts

# ---------------------------------------------------------------------------------------
section "gcra.lua: burst, refusal, wait"
# Timing bounds allow for the time the calls themselves took (t1 - t0, from Redis's TIME).
K="${RUN}{tenant-a}:rate"
t0=$(now_us)
for i in 1 2 3 4 5; do expect "take $i of burst 5 at 1/s" "$(ev gcra 1 "$K" 1000000 5 1)" "1 0"; done
read -r a w <<<"$(ev gcra 1 "$K" 1000000 5 1)"
t1=$(now_us)
el=$((t1 - t0))
expect "6th take refused" "$a" 0
check "wait is the 1 s interval less the time the burst took" "w >= 1000000 - el && w <= 1000000" "${w} us (calls took ${el} us)"
read -r a pw <<<"$(ev gcra 1 "$K" 1000000 5 0)"
expect "peek when empty refused" "$a" 0
check "peek's wait matches the take's" "pw <= w && w - pw < 200000" "${pw} us"
tat=$(rc GET "$K")
pttl=$(rc PTTL "$K")
t2=$(now_us)
check "TAT = time of the 1st take + 5 intervals" "tat - t0 >= 5000000 && tat - t0 <= 5000000 + el" "TAT-t0 $((tat - t0)) us"
check "key expires when the bucket is full again" "pttl * 1000 >= tat - t2 - 1000 && pttl * 1000 <= tat - t0 + 1000" "PTTL ${pttl} ms"
ev gcra 1 "$K" 1000000 5 1 >/dev/null
expect "a refused take leaves the TAT alone" "$(rc GET "$K")" "$tat"
read -r a w <<<"$(ev gcra 1 "$K" 10000 5 1)"
t3=$(now_us)
# At 100/s with burst 5 the wait is TAT + 10 ms - now - 50 ms: the old TAT still counts.
check "a faster rate applies at once but the spent burst stays spent" \
  "a == 0 && w >= tat - t3 - 40000 && w <= tat - t0 - 40000" "allowed $a, wait ${w} us"

section "gcra.lua: refill after sleeping"
K="${RUN}{tenant-b}:rate"
t0=$(now_us)
expect "take 1 of burst 2 at 5/s" "$(ev gcra 1 "$K" 200000 2 1)" "1 0"
expect "take 2 of burst 2" "$(ev gcra 1 "$K" 200000 2 1)" "1 0"
read -r a w <<<"$(ev gcra 1 "$K" 200000 2 1)"
el=$(($(now_us) - t0))
check "3rd refused, wait = 200 ms less the time taken" "a == 0 && w >= 200000 - el && w <= 200000" "allowed $a, wait ${w} us (calls took ${el} us)"
sleep "$(printf '0.%06d' $((w + 20000)))"
expect "after sleeping the wait (+20 ms) one token is back" "$(ev gcra 1 "$K" 200000 2 1)" "1 0"
read -r a w <<<"$(ev gcra 1 "$K" 200000 2 1)"
check "and only one" "a == 0" "allowed $a, wait ${w} us"
sleep 0.45
expect "after a full refill: burst again (1)" "$(ev gcra 1 "$K" 200000 2 1)" "1 0"
expect "after a full refill: burst again (2)" "$(ev gcra 1 "$K" 200000 2 1)" "1 0"

section "gcra.lua: peek takes nothing"
K="${RUN}{tenant-c}:rate"
n=0
for i in $(seq 50); do [[ $(ev gcra 1 "$K" 1000000 1 0) == "1 0" ]] && n=$((n + 1)); done
expect "50 peeks on burst 1 all allowed" "$n" 50
expect "peeks wrote no key" "$(rc EXISTS "$K")" 0
expect "the one token is still there" "$(ev gcra 1 "$K" 1000000 1 1)" "1 0"
read -r a w <<<"$(ev gcra 1 "$K" 1000000 1 0)"
check "peek now refused with a wait" "a == 0 && w > 500000 && w <= 1000000" "allowed $a, wait ${w} us"

section "gcra.lua: cost > 1, bad arguments"
K="${RUN}{tenant-d}:rate"
expect "cost 3 of burst 5" "$(ev gcra 1 "$K" 1000000 5 3)" "1 0"
read -r a w <<<"$(ev gcra 1 "$K" 1000000 5 3)"
check "cost 3 with 2 left refused, wait ~1 interval" "a == 0 && w > 500000 && w <= 1000000" "allowed $a, wait ${w} us"
expect "cost 2 still fits" "$(ev gcra 1 "$K" 1000000 5 2)" "1 0"
read -r a w <<<"$(ev gcra 1 "${RUN}{tenant-e}:rate" 1000000 5 6)"
expect "cost above the burst never fits" "$a" 0
out=$(ev gcra 1 "$K" 0 5 1)
[[ $out == ERR* ]] && ok "interval 0 is an error -> $out" || bad "interval 0 accepted: $out"
out=$(ev gcra 1 "$K" 1000 5 1 steal)
[[ $out == ERR* ]] && ok "unknown mode is an error -> $out" || bad "unknown mode accepted: $out"

section "gcra.lua as the sign-in failure budget: peek (cost 0) and spend (mode spend)"
K="${RUN}{budget}:net:10.0.0.0/24"
expect "peek on a fresh budget" "$(ev gcra 1 "$K" 1000000 2 0)" "1 0"
t0=$(now_us)
expect "spend 1 of 2: within, a token left" "$(ev gcra 1 "$K" 1000000 2 1 spend)" "1 0"
read -r a w <<<"$(ev gcra 1 "$K" 1000000 2 1 spend)"
el=$(($(now_us) - t0))
check "spend 2 of 2: within, next peek waits ~1 s" "a == 1 && w >= 1000000 - el && w <= 1000000" "within $a, wait ${w} us"
read -r a w <<<"$(ev gcra 1 "$K" 1000000 2 1 spend)"
el=$(($(now_us) - t0))
check "spend 3: past the budget, still moves the TAT (wait ~2 s)" "a == 0 && w >= 2000000 - el && w <= 2000000" "within $a, wait ${w} us"
read -r a pw <<<"$(ev gcra 1 "$K" 1000000 2 0)"
check "peek refused, same wait" "a == 0 && pw <= w && w - pw < 200000" "allowed $a, wait ${pw} us"
tat=$(rc GET "$K")
expect "3 spends moved the TAT 3 intervals" "$((tat - t0 >= 3000000 && tat - t0 <= 3000000 + el))" 1
pttl=$(rc PTTL "$K")
check "budget key expires when fully refilled (~3 s)" "pttl > 2000 && pttl <= 3000" "PTTL ${pttl} ms"

section "gcra.lua: 300 concurrent calls (3 processes x 100 pipelined) never exceed burst 20"
K="${RUN}{tenant-f}:rate"
pids=()
for p in 1 2 3; do
  (for i in $(seq 100); do printf 'EVALSHA %s 1 %s 60000000 20 1\n' "${SHA[gcra]}" "$K"; done |
    rc >"$TMP/gcra.$p") &
  pids+=($!)
done
wait "${pids[@]}"
allowed=$(cat "$TMP"/gcra.[123] | awk 'NR % 2 == 1 && $0 == "1"' | wc -l)
replies=$(($(cat "$TMP"/gcra.[123] | wc -l) / 2))
expect "replies" "$replies" 300
expect "allowed out of 300 (burst 20, 1/min)" "$allowed" 20

section "gcra.lua: 300 calls from 300 redis-cli processes, 100 at a time"
K="${RUN}{tenant-g}:rate"
seq 300 | xargs -P 100 -I{} sh -c 'echo $(redis-cli -h "$0" -p "$1" EVALSHA "$2" 1 "$3" 60000000 20 1)' \
  "$HOST" "$PORT" "${SHA[gcra]}" "$K" >"$TMP/gcra.x"
expect "replies" "$(wc -l <"$TMP/gcra.x")" 300
expect "allowed out of 300" "$(grep -c '^1 0$' "$TMP/gcra.x")" 20

# ---------------------------------------------------------------------------------------
section "lease_acquire / lease_release: up to the limit, refusal past it, release frees"
L="${RUN}{tenant-a}:leases"
expect "acquire l1 (limit 3)" "$(ev lease_acquire 1 "$L" 3 l1 30000)" "1 1"
expect "acquire l2" "$(ev lease_acquire 1 "$L" 3 l2 30000)" "1 2"
expect "acquire l3" "$(ev lease_acquire 1 "$L" 3 l3 30000)" "1 3"
expect "acquire l4 refused" "$(ev lease_acquire 1 "$L" 3 l4 30000)" "0 3"
expect "retried acquire of held l1 answers 1, count unchanged" "$(ev lease_acquire 1 "$L" 3 l1 30000)" "1 3"
expect "release l2" "$(ev lease_release 1 "$L" l2)" 1
expect "release l2 again" "$(ev lease_release 1 "$L" l2)" 0
expect "acquire l4 now fits" "$(ev lease_acquire 1 "$L" 3 l4 30000)" "1 3"
expect "a lowered limit (2) refuses new leases" "$(ev lease_acquire 1 "$L" 2 l5 30000)" "0 3"
pttl=$(rc PTTL "$L")
check "set expires with its leases (~30 s)" "pttl > 29000 && pttl <= 30000" "PTTL ${pttl} ms"
ev lease_acquire 1 "$L" 10 short 100 >/dev/null
pttl=$(rc PTTL "$L")
check "a short lease does not shorten the set's life" "pttl > 29000" "PTTL ${pttl} ms"
for id in l1 l3 l4 short; do ev lease_release 1 "$L" "$id" >/dev/null; done
expect "releasing every lease deletes the set" "$(rc EXISTS "$L")" 0

section "lease_acquire: an expired lease is removed by the next acquire"
L="${RUN}{tenant-b}:leases"
expect "acquire a 150 ms lease (limit 1)" "$(ev lease_acquire 1 "$L" 1 dying 150)" "1 1"
expect "second lease refused" "$(ev lease_acquire 1 "$L" 1 other 30000)" "0 1"
sleep 0.25
expect "after expiry the next acquire gets in" "$(ev lease_acquire 1 "$L" 1 other 30000)" "1 1"
expect "the expired member is gone" "$(rc ZSCORE "$L" dying)" ""
ev lease_release 1 "$L" other >/dev/null

section "lease_renew: renew extends, an expired lease is gone"
L="${RUN}{tenant-c}:leases"
expect "acquire a 300 ms lease (limit 1)" "$(ev lease_acquire 1 "$L" 1 r1 300)" "1 1"
sleep 0.2
expect "renew at 200 ms for 300 ms more" "$(ev lease_renew 1 "$L" r1 300)" 1
sleep 0.2
expect "at 400 ms (past the first expiry) still held: others refused" "$(ev lease_acquire 1 "$L" 1 r2 300)" "0 1"
pttl=$(rc PTTL "$L")
check "set's expiry follows the renewed lease" "pttl > 0 && pttl <= 300" "PTTL ${pttl} ms"
sleep 0.2
expect "renew after expiry: gone" "$(ev lease_renew 1 "$L" r1 300)" 0
expect "renew of an unknown lease: gone" "$(ev lease_renew 1 "$L" nope 300)" 0
expect "the set expired with its last lease" "$(rc EXISTS "$L")" 0
ev lease_acquire 1 "$L" 5 long 30000 >/dev/null
ev lease_acquire 1 "$L" 5 brief 100 >/dev/null
sleep 0.2
expect "an expired lease not yet pruned is gone for renew too" "$(ev lease_renew 1 "$L" brief 300)" 0
expect "renew removed nothing (pruning is acquire's job)" "$(rc ZCARD "$L")" 2
ev lease_release 1 "$L" long >/dev/null
ev lease_release 1 "$L" brief >/dev/null

section "lease_acquire: 300 concurrent acquires (3 processes) with limit 7"
L="${RUN}{tenant-d}:leases"
pids=()
for p in 1 2 3; do
  (for i in $(seq 100); do printf 'EVALSHA %s 1 %s 7 p%s-%s 30000\n' "${SHA[lease_acquire]}" "$L" "$p" "$i"; done |
    rc >"$TMP/lease.$p") &
  pids+=($!)
done
wait "${pids[@]}"
expect "acquired out of 300" "$(cat "$TMP"/lease.[123] | awk 'NR % 2 == 1 && $0 == "1"' | wc -l)" 7
expect "leases in the set" "$(rc ZCARD "$L")" 7
rc UNLINK "$L" >/dev/null

# ---------------------------------------------------------------------------------------
section "cluster_acquire: a tenant alone may use the whole cap"
C="${RUN}{cluster-x}:leases"
N="${RUN}{cluster-x}:counts"
W="${RUN}{cluster-x}:waiting"
# acq CAP TENANT LEASE [DURATION_MS] [WAIT_WINDOW_MS]
acq() { ev cluster_acquire 3 "$C" "$N" "$W" "$1" "$2" "$3" "${4:-30000}" "${5:-1000}"; }
rel() { ev cluster_release 2 "$C" "$N" "$1" "$2"; }
for i in 1 2 3 4; do expect "solo $i of cap 4" "$(acq 4 solo s$i)" "1 $i $i 1"; done
expect "5th refused (full)" "$(acq 4 solo s5)" "0 4 4 1"
expect "retry of a held lease answers 1" "$(acq 4 solo s1)" "1 4 4 1"
expect "count hash" "$(rc HGET "$N" solo)" 4
check "count hash lives as long as the leases" "$(rc PTTL "$N") > 29000" "PTTL $(rc PTTL "$N") ms"
out=$(acq 4 'bad|tenant' x)
[[ $out == ERR* ]] && ok "tenant with | is an error -> $out" || bad "tenant with | accepted: $out"
for i in 1 2 3 4; do rel solo s$i >/dev/null; done
expect "release twice removes nothing" "$(rel solo s1)" 0
expect "releasing every lease leaves no set and no counts" "$(rc EXISTS "$C" "$N")" 0
rc UNLINK "$W" >/dev/null

section "cluster_acquire: A floods cap 10, B still gets in once below its fair share"
# A fills the cap and keeps asking; B is refused (full) and recorded as waiting. Each time
# A releases a lease, A's own retry is refused while A holds >= 10/2 and B's retry is
# admitted, until both hold their share of 5.
for i in $(seq 10); do acq 10 A a$i >/dev/null; done
expect "A holds the whole cap" "$(acq 10 A a11)" "0 10 10 1"
expect "B refused while full (now waiting)" "$(acq 10 B b1)" "0 0 10 2"
for round in 1 2 3 4 5; do
  rel A a$round >/dev/null
  expect "round $round: A released one; A's retry refused (over share)" \
    "$(acq 10 A a$((100 + round)))" "0 $((10 - round)) 9 2"
  expect "round $round: B admitted" "$(acq 10 B b$round)" "1 $round 10 2"
done
rel A a6 >/dev/null
expect "at 5/5 with a slot free: B over its share now, refused" "$(acq 10 B b9)" "0 5 9 2"
expect "and A, at 4, below its share, admitted" "$(acq 10 A a200)" "1 5 10 2"
expect "counts" "$(rc HGET "$N" A) $(rc HGET "$N" B)" "5 5"
rc PEXPIRE "$N" 5000 >/dev/null
expect "lease_renew works on cluster members" "$(ev lease_renew 2 "$C" "$N" "B|b1" 60000)" 1
check "and carries the counts' expiry along" "$(rc PTTL "$N") > 59000" "counts PTTL $(rc PTTL "$N") ms"
rc UNLINK "$C" "$N" "$W" >/dev/null

section "cluster_acquire: waiting expires, then a lone asker may exceed its share again"
for i in $(seq 4); do acq 4 A a$i 30000 200 >/dev/null; done
expect "B refused (full), waits 200 ms" "$(acq 4 B b1 30000 200)" "0 0 4 2"
rel A a1 >/dev/null
expect "while B waits, A (3 of 4) is over its share" "$(acq 4 A a5 30000 200)" "0 3 3 2"
sleep 0.3
expect "once the waiting ran out, A is alone and admitted" "$(acq 4 A a6 30000 200)" "1 4 4 1"
rc UNLINK "$C" "$N" "$W" >/dev/null

section "cluster_acquire: expired leases of a dead replica leave no count behind"
for i in 1 2 3; do acq 3 D d$i 150 >/dev/null; done
expect "cap 3 full of D's 150 ms leases" "$(acq 3 E e1)" "0 0 3 2"
expect "D counted 3" "$(rc HGET "$N" D)" 3
sleep 0.25
expect "after expiry E gets in (its own waiting is not another's)" "$(acq 3 E e1)" "1 1 1 1"
expect "D's count is gone with its leases" "$(rc HEXISTS "$N" D)" 0
expect "release of a pruned lease changes nothing" "$(rel D d1) $(rc HGET "$N" E)" "0 1"
rc UNLINK "$C" "$N" "$W" >/dev/null

section "cluster_acquire: counts that disagree with the set are rebuilt from it"
for i in 1 2 3; do acq 10 F f$i >/dev/null; done
acq 10 G g1 >/dev/null
rc ZREM "$C" "F|f1" >/dev/null # a lease removed behind the script's back
expect "next call counts from the set" "$(acq 10 G g2)" "1 2 4 2"
expect "rebuilt counts" "$(rc HGET "$N" F) $(rc HGET "$N" G)" "2 2"
rc HSET "$N" ghost 7 >/dev/null # a count with no lease
expect "a ghost count is dropped" "$(acq 10 F f9)" "1 3 5 2"
expect "ghost gone" "$(rc HEXISTS "$N" ghost)" 0
rc UNLINK "$N" >/dev/null # the counts key lost entirely
expect "lost counts rebuilt" "$(acq 10 F f10)" "1 4 6 2"
rc UNLINK "$C" "$N" "$W" >/dev/null

section "cluster_acquire: 300 concurrent calls from 2 tenants (3 processes), cap 10"
pids=()
for p in 1 2 3; do
  t=A
  ((p == 3)) && t=B
  (for i in $(seq 100); do
    printf 'EVALSHA %s 3 %s %s %s 10 %s p%s-%s 30000 1000\n' "${SHA[cluster_acquire]}" "$C" "$N" "$W" "$t" "$p" "$i"
  done | rc >"$TMP/cl.$p") &
  pids+=($!)
done
wait "${pids[@]}"
expect "admitted out of 300" "$(cat "$TMP"/cl.[123] | awk 'NR % 4 == 1 && $0 == "1"' | wc -l)" 10
expect "leases in the set" "$(rc ZCARD "$C")" 10
expect "counts add up" "$(rc HVALS "$N" | awk '{s += $1} END {print s}')" 10
rc UNLINK "$C" "$N" "$W" >/dev/null

section "cluster_acquire: sustained flood (6 sessions of A, cap 3) vs B retrying every 25 ms"
# flood WINDOW N: A's worker N keeps one redis-cli session open and asks in a tight loop;
# when admitted it holds the lease 50 ms and releases it; until $TMP/stop exists.
flood() {
  local window=$1 n=$2 i=0 a _
  coproc S { rc; }
  while [[ ! -e $TMP/stop ]]; do
    i=$((i + 1))
    printf 'EVALSHA %s 3 %s %s %s 3 A f%s-%s 30000 %s\n' \
      "${SHA[cluster_acquire]}" "$C" "$N" "$W" "$n" "$i" "$window" >&"${S[1]}"
    read -t 5 -r a <&"${S[0]}" || break
    for _ in 1 2 3; do read -t 5 -r _ <&"${S[0]}"; done
    if [[ $a == 1 ]]; then
      sleep 0.05
      printf 'EVALSHA %s 2 %s %s A f%s-%s\n' "${SHA[cluster_release]}" "$C" "$N" "$n" "$i" >&"${S[1]}"
      read -t 5 -r _ <&"${S[0]}"
    fi
  done
  echo "$i" >"$TMP/flood.$n"
  eval "exec ${S[1]}>&-"
  wait
}
# b_attempts WINDOW: how many 25 ms-spaced tries B needs (0 = not within 80).
b_attempts() {
  local window=$1 n
  for n in $(seq 80); do
    if [[ $(acq 3 B "b-$window-$n" 30000 "$window") == 1* ]]; then
      rel B "b-$window-$n" >/dev/null
      echo "$n"
      return
    fi
    sleep 0.025
  done
  echo 0
}
for window in 1000 0; do
  for trial in 1 2 3; do
    BG_PIDS=()
    for n in 1 2 3 4 5 6; do flood "$window" "$n" & BG_PIDS+=($!); done
    sleep 0.5
    t0=$(now_us)
    tries=$(b_attempts "$window")
    el=$(($(now_us) - t0))
    touch "$TMP/stop"
    wait "${BG_PIDS[@]}"
    BG_PIDS=()
    rm -f "$TMP/stop"
    calls=$(cat "$TMP"/flood.* | awk '{s += $1} END {print s}')
    rc UNLINK "$C" "$N" "$W" >/dev/null
    if ((window > 0)); then
      check "trial $trial, fairness on (wait window 1000 ms): B got in within 5 tries" "tries >= 1 && tries <= 5" \
        "$tries tries in $((el / 1000)) ms; A asked $calls times"
    else
      echo "  info  trial $trial, fairness off (wait window 0): B needed $tries tries (0 = not within 80)" \
        "in $((el / 1000)) ms; A asked $calls times"
    fi
  done
done

# ---------------------------------------------------------------------------------------
section "replication: TIME-based scripts replicate their effects (private master + replica)"
MASTER_PORT=$(free_port 6390)
redis-server --port "$MASTER_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$TMP" --logfile "$TMP/master.log" --pidfile "$TMP/master.pid"
REPLICA_PORT=$(free_port $((MASTER_PORT + 1)))
redis-server --port "$REPLICA_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$TMP" --logfile "$TMP/replica.log" --pidfile "$TMP/replica.pid" \
  --replicaof 127.0.0.1 "$MASTER_PORT"
for i in $(seq 50); do
  redis-cli -p "$REPLICA_PORT" INFO replication 2>/dev/null | grep -q 'master_link_status:up' && break
  sleep 0.1
done
mrc() { redis-cli -p "$MASTER_PORT" "$@"; }
K="${RUN}{tenant-r}:rate"
L="${RUN}{tenant-r}:leases"
mrc EVAL "$(cat "$DIR/gcra.lua")" 1 "$K" 1000000 5 1 >/dev/null
mrc EVAL "$(cat "$DIR/lease_acquire.lua")" 1 "$L" 5 x 30000 >/dev/null
mrc WAIT 1 2000 >/dev/null
expect "replica holds the master's TAT" "$(redis-cli -p "$REPLICA_PORT" GET "$K")" "$(mrc GET "$K")"
expect "replica holds the master's lease scores" \
  "$(redis-cli -p "$REPLICA_PORT" ZRANGE "$L" 0 -1 WITHSCORES | tr '\n' ' ')" \
  "$(mrc ZRANGE "$L" 0 -1 WITHSCORES | tr '\n' ' ')"
check "replica's key has a TTL too" "$(redis-cli -p "$REPLICA_PORT" PTTL "$K") > 0" "PTTL $(redis-cli -p "$REPLICA_PORT" PTTL "$K") ms"
redis-cli -p "$REPLICA_PORT" shutdown nosave >/dev/null 2>&1
REPLICA_PORT=""

# ---------------------------------------------------------------------------------------
if [[ -z ${KQLGATE_TEST_NO_BENCH:-} ]]; then
  section "benchmark: EVALSHA round trips on the private server (127.0.0.1:$MASTER_PORT, loopback TCP)"
  declare -A MSHA
  for s in "${SCRIPTS[@]}"; do MSHA[$s]=$(mrc SCRIPT LOAD "$(cat "$DIR/$s.lua")"); done
  # bench LABEL COMMAND...: 10,000 sequential calls on one connection (redis-benchmark -c 1),
  # then the server's own time per call from INFO commandstats.
  bench() {
    local label=$1 out avg p50 p99 rps usec
    shift
    mrc CONFIG RESETSTAT >/dev/null
    out=$(redis-benchmark -p "$MASTER_PORT" -c 1 -n 10000 -r 1000000 --precision 3 "$@" 2>&1 | tr '\r' '\n')
    rps=$(echo "$out" | sed -n 's/^ *throughput summary: \([0-9.]*\) requests per second/\1/p' | tail -1)
    read -r avg _ p50 _ p99 _ <<<"$(echo "$out" | grep -A2 'latency summary' | tail -1)"
    usec=$(mrc INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
    printf '  %-46s round trip avg %s ms, p50 %s ms, p99 %s ms (%s calls/s); in Redis %s us/call\n' \
      "$label" "$avg" "$p50" "$p99" "$rps" "$usec"
  }
  B="${RUN}{bench}"
  bench "gcra take (allowed)" EVALSHA "${MSHA[gcra]}" 1 "$B:rate" 1 1000000000 1
  bench "gcra take (refused)" EVALSHA "${MSHA[gcra]}" 1 "$B:rate2" 1000000000 1 1
  bench "gcra peek" EVALSHA "${MSHA[gcra]}" 1 "$B:rate" 1 1000000000 0
  bench "lease_acquire (random ids, limit 1e6)" EVALSHA "${MSHA[lease_acquire]}" 1 "$B:leases" 1000000 "__rand_int__" 60000
  mrc EVALSHA "${MSHA[lease_acquire]}" 1 "$B:leases" 1000000 held 60000 >/dev/null
  bench "lease_renew (held)" EVALSHA "${MSHA[lease_renew]}" 1 "$B:leases" held 60000
  bench "lease_release (mostly not held)" EVALSHA "${MSHA[lease_release]}" 1 "$B:leases" "__rand_int__"
  # fill KEY N TENANTS: N leases spread over TENANTS tenants, expiring in 10 minutes.
  fill() {
    local args=() i exp=$(($(date +%s) * 1000 + 600000))
    for i in $(seq "$2"); do args+=("$exp" "t$((i % $3))|l$i"); done
    mrc ZADD "$1" "${args[@]}" >/dev/null
  }
  # Every call scans the whole set: refused (full) records a waiter; a held lease's retry
  # takes the admitting path (ZADD, PEXPIREAT) without growing the set.
  for cap in 10 1000; do
    fill "$B:c$cap" "$cap" $((cap == 10 ? 3 : 50))
    ck=("$B:c$cap" "$B:n$cap" "$B:w$cap")
    bench "cluster_acquire, cap $cap full (refused)" EVALSHA "${MSHA[cluster_acquire]}" 3 "${ck[@]}" "$cap" T "__rand_int__" 60000 1000
    bench "cluster_acquire, cap $cap full (held retry)" EVALSHA "${MSHA[cluster_acquire]}" 3 "${ck[@]}" "$cap" t1 l1 60000 1000
  done
  # Admit then release, cap 1000 with 500 held: a pipelined pair per round trip pair.
  mrc DEL "$B:c1000" "$B:n1000" "$B:w1000" >/dev/null
  fill "$B:c1000" 500 50
  mrc EVALSHA "${MSHA[cluster_acquire]}" 3 "$B:c1000" "$B:n1000" "$B:w1000" 1000 t1 x 60000 1000 >/dev/null
  bench "cluster_acquire admitted (500+ held, 50 tenants)" EVALSHA "${MSHA[cluster_acquire]}" 3 "$B:c1000" "$B:n1000" "$B:w1000" 100000 T "__rand_int__" 60000 1000
  bench "cluster_release (mostly not held)" EVALSHA "${MSHA[cluster_release]}" 2 "$B:c1000" "$B:n1000" T "__rand_int__"
  mrc CONFIG RESETSTAT >/dev/null
  start=$(date +%s%N)
  redis-cli -p "$MASTER_PORT" -r 10000 EVALSHA "${MSHA[gcra]}" 1 "$B:rate3" 1 1000000000 1 >/dev/null
  end=$(date +%s%N)
  echo "  redis-cli -r 10000 gcra take: $(((end - start) / 10000)) ns per call (includes redis-cli's own printing)"
fi

printf '\n%d passed, %d failed\n' "$passes" "$fails"
((fails == 0))
