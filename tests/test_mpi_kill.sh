#!/bin/sh
# test_mpi_kill.sh MPIRUN TEST_MPI_DIST DIR: a rank killed by SIGKILL
# (test_mpi_dist --kill, after rank 0's checkpoint of epoch 4) ends the
# whole job: mpirun exits non-zero within 30 s, and the checkpoint on disk
# is intact (it loads, and is epoch 4's). TAP.
MPIRUN=$1 EXE=$2 DIR=$3
# Open MPI's flag for more ranks than cores; empty for MPICH (tests/meson.build)
OVERSUBSCRIBE=${MPIRUN_OVERSUBSCRIBE---oversubscribe}
echo "1..2"
rm -f "$DIR/kill.safetensors"
start=$(date +%s)
timeout 60 "$MPIRUN" -np 2 $OVERSUBSCRIBE "$EXE" --kill "$DIR" >"$DIR/kill.log" 2>&1
rc=$?
secs=$(($(date +%s) - start))
sed 's/^/# /' "$DIR/kill.log" | head -20
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $secs -le 30 ]; then
  echo "ok 1 - mpirun exits non-zero ($rc) in $secs s when a rank is killed"
else
  echo "not ok 1 - mpirun exits non-zero within 30 s when a rank is killed (status $rc, $secs s)"
fi
if "$MPIRUN" -np 1 "$EXE" --check "$DIR/kill.safetensors" >"$DIR/check.log" 2>&1; then
  echo "ok 2 - the last checkpoint on disk is intact"
else
  sed 's/^/# /' "$DIR/check.log" | head -10
  echo "not ok 2 - the last checkpoint on disk is intact"
fi
