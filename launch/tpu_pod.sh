#!/usr/bin/env bash
# Run a findap-jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh --name findap-v5p --zone us-east5-a --type v5p-64 \
#       --workdir gs://my-bucket/runs/llama-fin -- --config.model=gs://my-bucket/models/Meta-Llama-3-8B-Instruct
#
# Steps (--steps, default all four, in this order):
#   create   gcloud compute tpus tpu-vm create NAME --zone ZONE --accelerator-type TYPE --version RUNTIME
#   copy     the working tree (git ls-files: tracked + untracked, not ignored) to ~/findap-jax
#            on every worker (gcloud compute tpus tpu-vm scp --recurse --worker=all)
#   install  pip install -e . "jax[tpu]" on every worker
#   run      `findap-jax VERB --config=CONFIG --workdir WORKDIR [ARGS after --]` on every worker
#            at once (gcloud compute tpus tpu-vm ssh --worker=all --command ...)
# jax.distributed is initialised on TPU without a coordinator address: JAX reads the slice
# from the TPU metadata server (see the note on CLOUD_TPU_TASK_ID below).
#
# Workdir: every worker must see the same directory (each process writes its own checkpoint
# shards), so use a bucket. findap-jax reads and writes local paths, so gs://BUCKET/PATH in
# WORKDIR or in the ARGS is mounted on every worker with gcsfuse at /mnt/gcs/BUCKET and
# passed on as /mnt/gcs/BUCKET/PATH (the run step installs gcsfuse where it is missing).
#
# Options (flag, or the environment variable in brackets):
#   --name NAME        TPU VM name                      [NAME, default findap-pod]
#   --zone ZONE        zone                             [ZONE, default us-east5-a]
#   --type TYPE        accelerator type                 [TYPE, default v5p-64]
#   --runtime RUNTIME  TPU software version             [RUNTIME, default v2-alpha-tpuv5]
#   --project PROJECT  GCP project (default: gcloud's)  [PROJECT]
#   --config SPEC      config file[:arg]                [CONFIG, default configs/recipes/findap_llama3_8b.py:tpu]
#   --workdir DIR      run directory (gs:// recommended) [WORKDIR, required for run]
#   --verb VERB        recipe or train                  [VERB, default recipe]
#   --steps LIST       comma list of create,copy,install,run [STEPS, default all]
#   --spot             create a Spot TPU VM             [SPOT=1]
#   --background       run under nohup on the workers (log: ~/findap-run.log) and return
#                      [BACKGROUND=1]
#   --dry-run          print every command instead of running it [DRY_RUN=1]
#   -h, --help         this text
set -euo pipefail

NAME="${NAME:-findap-pod}"
ZONE="${ZONE:-us-east5-a}"
TYPE="${TYPE:-v5p-64}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5}"
PROJECT="${PROJECT:-}"
CONFIG="${CONFIG:-configs/recipes/findap_llama3_8b.py:tpu}"
WORKDIR="${WORKDIR:-}"
VERB="${VERB:-recipe}"
STEPS="${STEPS:-create,copy,install,run}"
SPOT="${SPOT:-0}"
BACKGROUND="${BACKGROUND:-0}"
DRY_RUN="${DRY_RUN:-0}"
REMOTE_DIR="findap-jax"          # under the worker's home directory
MOUNT_ROOT="/mnt/gcs"
EXTRA=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "tpu_pod.sh: error: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --zone) ZONE="${2:?--zone needs a value}"; shift 2 ;;
    --type) TYPE="${2:?--type needs a value}"; shift 2 ;;
    --runtime) RUNTIME="${2:?--runtime needs a value}"; shift 2 ;;
    --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --verb) VERB="${2:?--verb needs a value}"; shift 2 ;;
    --steps) STEPS="${2:?--steps needs a value}"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --background) BACKGROUND=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option $1 (findap-jax arguments go after --)" ;;
  esac
done

case "$VERB" in recipe|train) ;; *) die "--verb must be recipe or train, got '$VERB'" ;; esac
IFS=',' read -r -a STEP_LIST <<< "$STEPS"
for s in "${STEP_LIST[@]}"; do
  case "$s" in create|copy|install|run) ;; *) die "unknown step '$s' (create, copy, install, run)" ;; esac
done
want() { [[ ",$STEPS," == *",$1,"* ]]; }
if want run && [[ -z "$WORKDIR" ]]; then
  die "--workdir (or WORKDIR) is required for the run step"
fi

GCLOUD_COMMON=(--zone "$ZONE")
if [[ -n "$PROJECT" ]]; then GCLOUD_COMMON+=(--project "$PROJECT"); fi

# One shell word per argument, quoted only when needed (the dry run prints runnable lines).
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

# Print (dry run) or run one command.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then quote "$@"; else "$@"; fi
}

# gs://BUCKET/PATH -> /mnt/gcs/BUCKET/PATH (also inside --flag=gs://...); sets LOCAL and
# remembers the bucket in BUCKETS.
BUCKETS=()
localize() {
  local prefix rest bucket b
  LOCAL="$1"
  [[ "$LOCAL" == *gs://* ]] || return 0
  prefix="${LOCAL%%gs://*}"
  rest="${LOCAL#*gs://}"
  bucket="${rest%%/*}"
  [[ -n "$bucket" ]] || die "no bucket in '$1'"
  if [[ "$rest" == */* ]]; then
    LOCAL="${prefix}${MOUNT_ROOT}/${bucket}/${rest#*/}"
  else
    LOCAL="${prefix}${MOUNT_ROOT}/${bucket}"
  fi
  for b in "${BUCKETS[@]+"${BUCKETS[@]}"}"; do [[ "$b" == "$bucket" ]] && return 0; done
  BUCKETS+=("$bucket")
}
RUN_WORKDIR=""
if [[ -n "$WORKDIR" ]]; then localize "$WORKDIR"; RUN_WORKDIR="$LOCAL"; fi
RUN_ARGS=()
for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do localize "$a"; RUN_ARGS+=("$LOCAL"); done

ssh_all() {  # run a shell command on every worker
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_COMMON[@]}" --worker=all --command "$1"
}

if want create; then
  create=(gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_COMMON[@]}"
          --accelerator-type "$TYPE" --version "$RUNTIME")
  if [[ "$SPOT" == 1 ]]; then create+=(--spot); fi
  run "${create[@]}"
fi

if want copy; then
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  # Tracked and untracked files that git does not ignore: no .venv, caches or run outputs.
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# stage the working tree (git ls-files --cached --others --exclude-standard) in $stage/$REMOTE_DIR"
  else
    mkdir -p "$stage/$REMOTE_DIR"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
       while IFS= read -r -d '' f; do if [[ -f "$f" ]]; then printf '%s\0' "$f"; fi; done |
       tar -cf - --null -T -) | tar -xf - -C "$stage/$REMOTE_DIR"
  fi
  ssh_all "rm -rf ~/$REMOTE_DIR"
  run gcloud compute tpus tpu-vm scp --recurse "$stage/$REMOTE_DIR" "$NAME:~/" "${GCLOUD_COMMON[@]}" --worker=all
fi

if want install; then
  ssh_all "cd ~/$REMOTE_DIR && python3 -m pip install -q -e . 'jax[tpu]'"
fi

if want run; then
  cmd="set -e"
  if ((${#BUCKETS[@]})); then
    # gcsfuse from Google's apt repository (https://cloud.google.com/storage/docs/gcsfuse-install).
    cmd+="; if ! command -v gcsfuse >/dev/null; then"
    cmd+=" echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
    cmd+=" && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
    cmd+=" && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; fi"
  fi
  for b in "${BUCKETS[@]+"${BUCKETS[@]}"}"; do
    # --implicit-dirs: see folders written by other tools; --rename-dir-limit: checkpoint
    # saves write to a temporary folder and rename it.
    cmd+="; sudo mkdir -p $MOUNT_ROOT/$b && sudo chown \$(id -u):\$(id -g) $MOUNT_ROOT/$b"
    cmd+="; mountpoint -q $MOUNT_ROOT/$b || gcsfuse --implicit-dirs --rename-dir-limit=1000000 $b $MOUNT_ROOT/$b"
  done
  # findap_jax.parallel.distributed initialises jax.distributed on TPU when TPU_WORKER_HOSTNAMES
  # or CLOUD_TPU_TASK_ID is set. gcloud TPU VMs publish the worker number in the metadata
  # server instead, so export it as CLOUD_TPU_TASK_ID; jax.distributed.initialize() then
  # finds the slice (GceTpuCluster) by itself.
  cmd+="; CLOUD_TPU_TASK_ID=\$(curl -fsS -H Metadata-Flavor:Google"
  cmd+=" http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)"
  cmd+="; export CLOUD_TPU_TASK_ID"
  cmd+="; export PATH=\$HOME/.local/bin:\$PATH; cd ~/$REMOTE_DIR"
  findap=(findap-jax "$VERB" "--config=$CONFIG" --workdir "$RUN_WORKDIR" "${RUN_ARGS[@]+"${RUN_ARGS[@]}"}")
  quoted="$(quote "${findap[@]}")"
  if [[ "$BACKGROUND" == 1 ]]; then
    cmd+="; nohup $quoted > ~/findap-run.log 2>&1 < /dev/null & echo \"worker \$CLOUD_TPU_TASK_ID: started, log ~/findap-run.log\""
  else
    cmd+="; $quoted"
  fi
  ssh_all "$cmd"
fi
