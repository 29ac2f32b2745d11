# Environment shared by the scripts that run coconut under mpirun on this machine.
# Sourced, not executed.
# Open MPI refuses to run as root unless told; containers and CI run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Keep BLAS from spawning its own threads beyond what coconut asks for.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
