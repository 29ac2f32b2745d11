#!/usr/bin/env bash
# Example: `coconut train` on several nodes with mpirun and a hostfile, without Slurm.
#   usage: bash cluster/mpirun_hostfile.sh HOSTFILE RANKS_PER_NODE CONFIG.yaml [--set key=value ...]
#   e.g.   bash cluster/mpirun_hostfile.sh cluster/hostfile 8 configs/cluster/prosqa_2x8_pp2_dp8.yaml
# Ranks are placed by slot, RANKS_PER_NODE per node, so world rank = node * RANKS_PER_NODE
# + local rank; with the grid's layout (rank = dp_index * pp + stage, parallel/grid.h) a
# pipeline of pp <= RANKS_PER_NODE stages stays inside one node. coconut prints on rank 0
# "launcher: mpirun: rank 0 of N, local rank 0 of RANKS_PER_NODE on this node".
# The build must exist at the same path on every node (a shared file system, or copies);
# COCONUT_BIN=/abs/path/coconut picks another binary than build/launcher/coconut.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,4p' "$0" >&2; exit 2; }
hostfile=$(realpath "$1") per_node=$2; shift 2
cd "$(dirname "$0")/.."
source cluster/env.sh
ranks=$(( $(grep -cE '^[^#[:space:]]' "$hostfile") * per_node ))
# -x passes variables to the remote ranks (mpirun does not forward the environment by
# itself): the thread counts, and those of cluster/env.sh and NCCL that are set here.
# --bind-to core keeps each rank's threads on its own cores.
forward=(-x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS)
for v in OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA; do
  if [ -n "${!v:-}" ]; then forward+=(-x "$v"); fi
done
exec mpirun -np "$ranks" --hostfile "$hostfile" --map-by "ppr:$per_node:node" --bind-to core "${forward[@]}" \
  "${COCONUT_BIN:-$PWD/build/launcher/coconut}" train "$@"
