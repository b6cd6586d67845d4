#!/bin/sh
# test_mpi_mnist.sh MPIRUN MNIST_MLP_DIST MNIST_MLP: one epoch of
# examples/mnist_mlp_dist on 2 ranks (global batch 32) reaches the test
# accuracy of one epoch of examples/mnist_mlp in one process, within 0.5
# points (the same steps; the gradients are summed in another order). TAP.
MPIRUN=$1 DIST=$2 ONE=$3
# Open MPI's flag for more ranks than cores; empty for MPICH (tests/meson.build)
OVERSUBSCRIBE=${MPIRUN_OVERSUBSCRIBE---oversubscribe}
echo "1..2"
out=$("$MPIRUN" -np 2 $OVERSUBSCRIBE "$DIST" --epochs 1)
rc=$? # mpirun's status (a pipe into tail would give tail's)
dist=$(printf '%s\n' "$out" | tail -n 1)
one=$("$ONE" --epochs 1 | tail -n 1)
echo "# 2 ranks: $dist; one process: $one"
case $rc:$dist in "0:test accuracy: "*) echo "ok 1 - mnist_mlp_dist trains on 2 ranks" ;;
  *) echo "not ok 1 - mnist_mlp_dist trains on 2 ranks (status $rc)" ;; esac
a=${dist#test accuracy: } b=${one#test accuracy: }
if awk -v a="${a%\%}" -v b="${b%\%}" 'BEGIN { d = a - b; exit !(a > 80 && d < 0.5 && d > -0.5) }'; then
  echo "ok 2 - the same accuracy as one process"
else
  echo "not ok 2 - the same accuracy as one process"
fi
