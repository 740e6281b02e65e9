#!/usr/bin/env bash
# Train on SLURM, one node or many: one torchrun per node, one process per GPU.
#
#   sbatch --nodes=2 --gpus-per-node=4 --time=24:00:00 scripts/slurm_train.sh configs/cityscapes/spnet_r101.yaml [key=value ...]
#
# Preemption and time limits (docs/training.md, "Preemption"):
# - 180 s before the time limit SLURM sends USR1 to this script alone (--signal=B:USR1@180). The
#   script writes "requested: ..." into the stop file; every training process polls it, ends its
#   iteration (or abandons a validation), saves <work_dir>/last.pth and writes "stop requested ..."
#   into the file; the script then requeues the job, which continues with --resume auto. A run whose
#   processes are still starting takes the request too (and stops after its first iteration). Nothing
#   relies on exit codes, which torchrun rewrites.
# - Preemption and scancel send SIGTERM to every process of the job: the training processes save
#   and exit (their DataLoader workers ignore it) while this script waits for them. Requeueing a
#   preempted job is SLURM's own (PreemptMode=REQUEUE and --requeue below).
# The stop file must be on a filesystem all nodes see (the submit folder, by default), like the work dir.
# The rendezvous port derives from the job id. DRY_RUN=1 prints the command instead of running it.
#SBATCH --job-name=spnet
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch [options] scripts/slurm_train.sh CONFIG [key=value ...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-1}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}  # "a100:4" -> "4"
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=$((20000 + SLURM_JOB_ID % 20000))
STOP_FILE=${STOP_FILE:-${SLURM_SUBMIT_DIR:-$PWD}/slurm-$SLURM_JOB_ID.stop}

# --shutdown-timeout: on SIGTERM, torchrun gives its processes this long to save before SIGKILL
COMMAND=(srun --kill-on-bad-exit=1 torchrun
  --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" --shutdown-timeout=120
  --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$PORT"
  train.py --config "$CONFIG" --resume auto --stop-file "$STOP_FILE" "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "${COMMAND[*]}"
  exit 0
fi

rm -f "$STOP_FILE"  # a requeued job keeps its id: the previous request is done
warned=0
# "requested:" (utils/preemption.py, REQUEST): a request to this run, also while its processes start;
# written whole (mv), so that no process reads the file half-written
trap 'warned=1; echo "requested: SLURM time-limit warning (USR1), job $SLURM_JOB_ID" > "$STOP_FILE.$$" &&
  mv -f "$STOP_FILE.$$" "$STOP_FILE"' USR1
trap 'touch "$STOP_FILE"' TERM INT
"${COMMAND[@]}" &
pid=$!
status=0
while true; do
  wait "$pid" && status=0 || status=$?
  kill -0 "$pid" 2>/dev/null || break  # wait also returns when a trap ran: wait again until srun ends
done
if [[ $warned == 1 ]] && grep -q "^stop requested" "$STOP_FILE" 2>/dev/null; then
  echo "requeueing job $SLURM_JOB_ID: $(cat "$STOP_FILE")"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
rm -f "$STOP_FILE"
exit "$status"
