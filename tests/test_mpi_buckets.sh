#!/bin/sh
# test_mpi_buckets.sh MPIRUN TEST_MPI_DIST DIR: ranks whose gradient buckets
# differ (test_mpi_dist --buckets: another bucket_bytes on rank 0), on the
# shared-memory path and on MPI collectives (--no-shm): nn_fit fails on
# every rank within 30 s with a message that names the difference, instead
# of summing mismatched segments or allreducing buckets of other sizes, and
# the same job then trains with buckets that agree (every rank exits 0). TAP.
MPIRUN=$1 EXE=$2 DIR=$3
# Open MPI's flag for more ranks than cores; empty for MPICH (tests/meson.build)
OVERSUBSCRIBE=${MPIRUN_OVERSUBSCRIBE---oversubscribe}
echo "1..2"
n=0
for path in "" --no-shm; do
  n=$((n + 1))
  start=$(date +%s)
  timeout 60 "$MPIRUN" -np 2 $OVERSUBSCRIBE "$EXE" --buckets $path >"$DIR/buckets.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  sed 's/^/# /' "$DIR/buckets.log" | head -12
  name="differing gradient buckets fail every rank with a message (${path:-shared memory})"
  if [ $rc -eq 0 ] && [ $secs -le 30 ] &&
    [ "$(grep -c "nn_fit returned shape mismatch: .*the ranks' gradient buckets differ" "$DIR/buckets.log")" -eq 2 ] &&
    [ "$(grep -c ": as expected$" "$DIR/buckets.log")" -eq 2 ]; then
    echo "ok $n - $name ($secs s)"
  else
    echo "not ok $n - $name (status $rc, $secs s)"
  fi
done
