#!/usr/bin/env bash
# Copies into one folder the shared libraries that our test binaries need and a
# machine with only the NVIDIA driver lacks (MPI, protobuf, yaml-cpp, spdlog,
# fmt, OpenBLAS, libgomp, gtest, cuBLAS, NCCL, cudart...), so the folder can be
# carried there beside the build folder (tests/gpu/run.sh puts it on
# LD_LIBRARY_PATH). glibc and the compiler's C++ runtime are left out: every
# Linux machine has them, newer ones included.
#   usage: tools/collect_gpu_libs.sh [build-dir=build-gpu] [dest=.gpulibs] [--no-cuda] [--mpi]
# --no-cuda leaves out the CUDA toolkit's libraries (cuBLAS alone is ~600 MB),
# for machines whose image already has CUDA 13 (the lent H100/H200 ones do).
# --mpi also carries Open MPI's runtime (mpirun, its plugins and help files, ~20 MB)
# into dest/openmpi, for the mpirun tests on a machine without Open MPI; tests/gpu/run.sh
# points OPAL_PREFIX at it.
set -euo pipefail
no_cuda=0 mpi=0
args=()
for a in "$@"; do
  case $a in
    --no-cuda) no_cuda=1 ;;
    --mpi) mpi=1 ;;
    *) args+=("$a") ;;
  esac
done
build=${args[0]:-build-gpu}
dest=${args[1]:-.gpulibs}
[ -d "$build" ] || { echo "collect_gpu_libs: no build folder $build" >&2; exit 2; }
mkdir -p "$dest"

# Test binaries: executable ELF files of the build outside CMake's scratch folders.
mapfile -t binaries < <(find "$build" -type f -perm -u+x -not -path '*/CMakeFiles/*' \
  -exec sh -c 'head -c 4 "$1" | grep -q ELF' _ {} \; -print)
[ ${#binaries[@]} -gt 0 ] || { echo "collect_gpu_libs: no binaries under $build" >&2; exit 2; }

system='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libutil|libresolv|libstdc\+\+|libgcc_s)\.so'
cuda='^(libcublas|libcublasLt|libcudart|libnccl|libcuda)\.so'
# Open MPI keeps its install layout under dest/openmpi, relative to the prefix (/usr), so
# that OPAL_PREFIX=dest/openmpi relocates it: programs, libraries with the plugins
# (Pkglibdir), and the help texts (Pkgdatadir).
if [ $mpi = 1 ]; then
  ompi_lib=$(ompi_info --path libdir --parsable | sed -n 's/^path:libdir://p')
  ompi_data=$(ompi_info --path pkgdatadir --parsable | sed -n 's/^path:pkgdatadir://p')
  prefix=$(ompi_info --path prefix --parsable | sed -n 's/^path:prefix://p')
  mkdir -p "$dest/openmpi/bin" "$dest/openmpi${ompi_lib#"$prefix"}" "$dest/openmpi${ompi_data#"$prefix"}"
  for tool in orterun orted; do cp -L "$(command -v $tool)" "$dest/openmpi/bin/"; done
  ln -sf orterun "$dest/openmpi/bin/mpirun"
  ln -sf orterun "$dest/openmpi/bin/mpiexec"
  cp -rL "$ompi_lib/." "$dest/openmpi${ompi_lib#"$prefix"}/"
  cp -rL "$ompi_data/." "$dest/openmpi${ompi_data#"$prefix"}/"
  # Their own dependencies (libevent, hwloc, PMIx, ...) join the flat library folder below.
  binaries+=("$dest/openmpi/bin/orterun" "$dest/openmpi/bin/orted")
  mapfile -t -O ${#binaries[@]} binaries < <(find "$dest/openmpi" -name '*.so*' -type f)
fi

for bin in "${binaries[@]}"; do
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $system ]]; then continue; fi
  if [[ $name =~ ^libcuda\.so ]]; then continue; fi  # the driver's own library, never carried
  if [ $no_cuda = 1 ] && [[ $name =~ $cuda ]]; then continue; fi
  [[ $path == "$(realpath "$dest")"/* ]] && continue  # already carried (Open MPI's own libraries)
  cp -L "$path" "$dest/$name"  # saved under the name the loader asks for
done
echo "collect_gpu_libs: ${#binaries[@]} binaries, $(ls "$dest" | wc -l) libraries in $dest ($(du -sh "$dest" | cut -f1))"
