#!/usr/bin/env bash
# Several local processes of one findap-jax command, joined by jax.distributed on loopback:
# a laptop-sized rehearsal of a multi-host run (CPU devices by default).
#
#   launch/local_multiprocess.sh -n 2 -k 4 -- findap-jax train --config=configs/sft.py --workdir /tmp/mp
#   launch/local_multiprocess.sh -n 2 -k 4 -- findap-jax recipe --config=configs/recipes/tiny.py \
#       --config.model=TINY_MODEL_DIR --workdir /tmp/mp_recipe
#
# Process i runs the command with
#   JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=i
#   XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=K"  JAX_PLATFORMS=cpu (unless set)
# (findap_jax.parallel.distributed reads the first three), its output in LOG_DIR/process<i>.log.
# The script waits for all of them and fails when any fails; then it stops the others
# (SIGTERM, SIGKILL after KILL_GRACE seconds), since they would wait forever in a collective.
#
# Options (flag, or the environment variable in brackets):
#   -n, --processes N   processes                           [NPROC, default 2]
#   -k, --devices K     CPU devices per process             [DEVICES, default 4]
#   --port PORT         coordinator port                    [PORT, default: a free port]
#   --log-dir DIR       per-process logs                    [LOG_DIR, default: a new temp dir]
#   --dry-run           print each process's command line   [DRY_RUN=1]
#   -h, --help          this text
# Environment: KILL_GRACE (seconds, default 10).
set -euo pipefail

NPROC="${NPROC:-2}"
DEVICES="${DEVICES:-4}"
PORT="${PORT:-}"
LOG_DIR="${LOG_DIR:-}"
DRY_RUN="${DRY_RUN:-0}"
KILL_GRACE="${KILL_GRACE:-10}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "local_multiprocess.sh: error: $*" >&2; exit 2; }
# One shell word per argument, quoted only when needed (the dry run prints runnable lines).
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

CMD=()
while (($#)); do
  case "$1" in
    -n|--processes) NPROC="${2:?$1 needs a value}"; shift 2 ;;
    -k|--devices) DEVICES="${2:?$1 needs a value}"; shift 2 ;;
    --port) PORT="${2:?--port needs a value}"; shift 2 ;;
    --log-dir) LOG_DIR="${2:?--log-dir needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; CMD=("$@"); break ;;
    *) die "unknown option $1 (the command goes after --)" ;;
  esac
done
((${#CMD[@]})) || die "no command: launch/local_multiprocess.sh [options] -- findap-jax VERB ..."
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "processes must be a positive integer, got '$NPROC'"
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || die "devices must be a positive integer, got '$DEVICES'"
if [[ -z "$PORT" ]]; then
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
          2>/dev/null || echo $((20000 + RANDOM % 20000)))"
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
if [[ -z "$LOG_DIR" ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then LOG_DIR="LOG_DIR"; else LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/findap-local.XXXXXX")"; fi
fi

XLA="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES"
PLATFORMS="${JAX_PLATFORMS:-cpu}"
env_of() {  # the per-process environment as NAME=value words
  echo "JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$NPROC JAX_PROCESS_ID=$1" \
       "XLA_FLAGS=$(quote "$XLA") JAX_PLATFORMS=$(quote "$PLATFORMS")"
}

if [[ "$DRY_RUN" == 1 ]]; then
  for ((i = 0; i < NPROC; i++)); do
    echo "$(env_of "$i") $(quote "${CMD[@]}") > $(quote "$LOG_DIR/process$i.log") 2>&1 &"
  done
  echo "wait"
  exit 0
fi

mkdir -p "$LOG_DIR"
PIDS=()
stop_all() {  # SIGTERM the processes still running, SIGKILL them after KILL_GRACE seconds
  local pid alive t
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((t = 0; t < KILL_GRACE * 10; t++)); do
    alive=0
    for pid in "${PIDS[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'echo "local_multiprocess.sh: interrupted, stopping the processes" >&2; stop_all; exit 130' INT TERM

for ((i = 0; i < NPROC; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$NPROC" JAX_PROCESS_ID="$i" \
    XLA_FLAGS="$XLA" JAX_PLATFORMS="$PLATFORMS" "${CMD[@]}" > "$LOG_DIR/process$i.log" 2>&1 &
  PIDS+=("$!")
  echo "[local_multiprocess] process $i: pid $!, log $LOG_DIR/process$i.log"
done

# Poll: bash reaps finished children, so `kill -0` fails for them and `wait PID` returns
# their exit status.
declare -A STATUS=()
failed=0
first=""
while ((${#STATUS[@]} < NPROC)); do
  for i in "${!PIDS[@]}"; do
    [[ -z "${STATUS[$i]:-}" ]] || continue
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      rc=0
      wait "${PIDS[$i]}" || rc=$?
      STATUS[$i]=$rc
      echo "[local_multiprocess] process $i exited with status $rc"
      if ((rc != 0 && !failed)); then
        failed=1
        first=$i
        echo "[local_multiprocess] process $i failed: stopping the others" >&2
        stop_all
      fi
    fi
  done
  sleep 0.2
done

if ((failed)); then
  echo "--- process $first failed first (status ${STATUS[$first]}); last lines of $LOG_DIR/process$first.log:" >&2
  tail -n 20 "$LOG_DIR/process$first.log" >&2 || true
  exit 1
fi
echo "[local_multiprocess] all $NPROC processes finished; logs in $LOG_DIR"
