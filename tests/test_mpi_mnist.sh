#!/bin/sh
# test_mpi_mnist.sh MPIRUN MNIST_MLP_DIST MNIST_MLP: one epoch of
# examples/mnist_mlp_dist on 2 ranks (global batch 32) reaches the test
# accuracy of one epoch of examples/mnist_mlp in one process, within 0.5
# points (the same steps; the gradients are summed in another order). TAP.
MPIRUN=$1 DIST=$2 ONE=$3
echo "1..2"
dist=$("$MPIRUN" -np 2 --oversubscribe "$DIST" --epochs 1 | tail -n 1)
rc=$?
one=$("$ONE" --epochs 1 | tail -n 1)
echo "# 2 ranks: $dist; one process: $one"
case $dist in "test accuracy: "*) echo "ok 1 - mnist_mlp_dist trains on 2 ranks" ;;
  *) echo "not ok 1 - mnist_mlp_dist trains on 2 ranks (status $rc)" ;; esac
a=${dist#test accuracy: } b=${one#test accuracy: }
if awk -v a="${a%\%}" -v b="${b%\%}" 'BEGIN { d = a - b; exit !(a > 80 && d < 0.5 && d > -0.5) }'; then
  echo "ok 2 - the same accuracy as one process"
else
  echo "not ok 2 - the same accuracy as one process"
fi
