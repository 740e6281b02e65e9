#!/usr/bin/env bash
# Train on SLURM, one node or many: one torchrun per node, one process per GPU.
#
#   sbatch --nodes=2 --gpus-per-node=4 scripts/slurm_train.sh configs/cityscapes/spnet_r101.yaml [key=value ...]
#
# The rendezvous port derives from the job id (no fixed port; the same on every node of the job).
# SLURM sends SIGTERM 2 minutes before the time limit (and on preemption); train.py then saves
# <work_dir>/last.pth and exits with 143, and this script requeues the job, which resumes with
# --resume auto. DRY_RUN=1 prints the command instead of running it.
#SBATCH --job-name=spnet
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --signal=TERM@120
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

COMMAND=(srun --kill-on-bad-exit=1 torchrun
  --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE"
  --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$PORT"
  train.py --config "$CONFIG" --resume auto "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "${COMMAND[*]}"
  exit 0
fi
status=0
"${COMMAND[@]}" || status=$?
if [[ $status -eq 143 ]]; then  # stopped by SIGTERM after saving: continue in a new allocation
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit $status
