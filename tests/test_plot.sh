#!/bin/sh
# The chart tool tools/plot (plot.h), reported as TAP: the same CSV gives
# the same SVG bytes; series, legend, title and axis labels are drawn; a
# log axis gets decade ticks; a non-number breaks a line (a new "M"); bad
# usage and a missing column fail with a message; -o through a symbolic
# link writes its target.
# Then tools/plots.py check on a copy of the pictures' inputs: it passes on
# the copy and fails, naming the file, once a CSV or the chart writer
# changes.
# Run by meson (suite 'docs'): sh tests/test_plot.sh PLOT_EXE SOURCE_ROOT PYTHON3
set -u
PLOT=$1
ROOT=$2
PY=$3
TMP=${TMPDIR:-/tmp}/test_plot.$$
mkdir -p "$TMP" || exit 1
trap 'rm -rf "$TMP"' EXIT
n=0
fails=0
ok() { # ok CONDITION-STATUS DESCRIPTION
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
echo "1..22"
printf 'epoch,loss,"val_loss",grad_norm/0.weight,grad_norm/2.weight\n1,2.5,2.6,0.5,1\n2,1.25,nan,0.05,1\n3,0.5,0.9,0.005,1\n4,0.25,1,0.0005,1\n' >"$TMP/h.csv"
"$PLOT" -o "$TMP/a.svg" --title 'Loss & more' --xlabel epoch --ylabel loss --logy \
  "$TMP/h.csv:loss" "$TMP/h.csv:val_loss=validation" "$TMP/h.csv:grad_norm/*"
ok $? "plot draws four series"
"$PLOT" -o "$TMP/b.svg" --title 'Loss & more' --xlabel epoch --ylabel loss --logy \
  "$TMP/h.csv:loss" "$TMP/h.csv:val_loss=validation" "$TMP/h.csv:grad_norm/*"
cmp -s "$TMP/a.svg" "$TMP/b.svg"
ok $? "the same input gives the same bytes"
[ "$(grep -c '<path ' "$TMP/a.svg")" -eq 4 ]
ok $? "one path per series"
grep -q '>validation</text>' "$TMP/a.svg" && grep -q '>grad_norm/2.weight</text>' "$TMP/a.svg" &&
  grep -q '>Loss &amp; more</text>' "$TMP/a.svg" && grep -q '>epoch</text>' "$TMP/a.svg"
ok $? "legend labels, escaped title and axis label"
grep -q '>0.0001</text>' "$TMP/a.svg" && grep -q '>10</text>' "$TMP/a.svg"
ok $? "log axis ticks at decades from 1e-4 to 10"
grep '<path ' "$TMP/a.svg" | sed -n 2p | grep -q 'M[0-9.]* [0-9.]* M'
ok $? "the nan of val_loss breaks its line"
"$PLOT" -o "$TMP/c.svg" "$TMP/h.csv:nope" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q 'no column "nope"' "$TMP/err"
ok $? "a missing column fails with its name"
"$PLOT" "$TMP/h.csv:loss" 2>"$TMP/err"
[ $? -eq 2 ] && grep -q '^usage: plot' "$TMP/err"
ok $? "no -o prints the usage"
# names with ':' and '=' (a layer named "enc:1"; a file named "run:2.csv")
printf 'epoch,grad_norm/enc:1.weight,a=b\n1,3,4\n2,2,3\n' >"$TMP/run:2.csv"
"$PLOT" -o "$TMP/colon.svg" "$TMP/run:2.csv:grad_norm/enc:1.weight" && grep -q '>grad_norm/enc:1.weight</text>' "$TMP/colon.svg"
ok $? "a file and a column whose names hold ':'"
"$PLOT" -o "$TMP/colon.svg" "$TMP/run:2.csv:a=b" && grep -q '>a=b</text>' "$TMP/colon.svg"
ok $? "a column whose name holds '='"
"$PLOT" -o "$TMP/colon.svg" "$TMP/run:2.csv:a=b=the a=b column" && grep -q '>the a=b column</text>' "$TMP/colon.svg"
ok $? "and that column with a label holding '='"
mkdir "$TMP/run" && "$PLOT" -o "$TMP/colon.svg" "$TMP/run:2.csv:a=b" && grep -q '>a=b</text>' "$TMP/colon.svg"
ok $? "a directory named as the file name's part before its ':' is not taken for the file"
ln -s /dev/stdout "$TMP/link"
"$PLOT" -o "$TMP/link" "$TMP/h.csv:loss" | cat >"$TMP/d.svg"
[ -L "$TMP/link" ] && grep -q '<path ' "$TMP/d.svg"
ok $? "-o /dev/stdout (here a link to it) writes to the pipe and leaves the link"
mkdir "$TMP/runs" && echo old >"$TMP/runs/f.svg" && chmod 640 "$TMP/runs/f.svg" &&
  ln -s runs/f.svg "$TMP/flink.svg"
"$PLOT" -o "$TMP/flink.svg" "$TMP/h.csv:loss"
[ $? -eq 0 ] && [ -L "$TMP/flink.svg" ] && grep -q '<path ' "$TMP/runs/f.svg" &&
  [ "$(stat -c %a "$TMP/runs/f.svg")" = 640 ] && [ "$(ls "$TMP/runs")" = f.svg ]
ok $? "-o a link to a file writes that file (its mode kept, no temporary left) and leaves the link"
ln -s nowhere/g.svg "$TMP/dangling.svg"
"$PLOT" -o "$TMP/dangling.svg" "$TMP/h.csv:loss" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q 'cannot follow the symbolic link' "$TMP/err" && [ -L "$TMP/dangling.svg" ]
ok $? "-o a dangling link fails with a message"
printf 'epoch,big\n1,1e308\n2,-1e308\n' >"$TMP/big.csv"
"$PLOT" -o "$TMP/e.svg" "$TMP/big.csv:big" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q 'cannot be drawn in doubles' "$TMP/err" && [ ! -e "$TMP/e.svg" ]
ok $? "values spanning more than a double fail with a message, writing nothing"
printf 'epoch,"w\r\n""x"",\ny",loss\r\n1,4,1\r\n2,2,0.5\r\n3,1,0.25\r\n' >"$TMP/q.csv"
printf 'epoch,wabcdefgh,loss\n1,4,1\n2,2,0.5\n3,1,0.25\n' >"$TMP/p.csv"
"$PLOT" -o "$TMP/q.svg" "$TMP/q.csv:loss" "$TMP/q.csv:w*" &&
  "$PLOT" -o "$TMP/p.svg" "$TMP/p.csv:loss" "$TMP/p.csv:w*" &&
  [ "$(grep -c '<path ' "$TMP/q.svg")" -eq 2 ] &&
  [ "$(grep '<path ' "$TMP/q.svg")" = "$(grep '<path ' "$TMP/p.svg")" ] &&
  "$PY" -c 'import sys, xml.etree.ElementTree as E
t = [e.text for e in E.parse(sys.argv[1]).iter("{http://www.w3.org/2000/svg}text")]
sys.exit("w\n\"x\",\ny" not in t)' "$TMP/q.svg"
ok $? "a quoted column name holding a quote, a comma and line breaks is one column (RFC 4180)"
mkdir "$TMP/long"
L=$(printf '%248s' '' | tr ' ' l).svg # a 252-byte name: with ".XXXXXX", past NAME_MAX
if touch "$TMP/long/$L" 2>/dev/null; then
  rm "$TMP/long/$L"
  "$PLOT" -o "$TMP/long/$L" "$TMP/h.csv:loss"
  [ $? -eq 0 ] && grep -q '<path ' "$TMP/long/$L" && [ "$(ls "$TMP/long")" = "$L" ]
  ok $? "-o a 252-byte file name writes it (a shorter temporary name), leaving no temporary"
else
  n=$((n + 1))
  echo "ok $n - # SKIP the file system refuses a 252-byte name"
fi
printf 'epoch,a\001b\n1,0.5\n2,0.25\n' >"$TMP/ctl.csv"
"$PLOT" -o "$TMP/ctl.svg" --xlabel "$(printf 'x\033')" "$TMP/ctl.csv:a*" \
  --title "$(printf 't\377\tu\357\277\277\303\251\360\237\230\200\342\202v')" &&
  "$PY" -c 'import sys, xml.etree.ElementTree as E
t = [e.text for e in E.parse(sys.argv[1]).iter("{http://www.w3.org/2000/svg}text")]
want = ("t\ufffd\tu\ufffd\xe9\U0001f600\ufffd\ufffdv", "x\ufffd", "a\ufffdb")
sys.exit(not all(w in t for w in want))' "$TMP/ctl.svg"
ok $? "control characters, U+FFFF and bytes that are not UTF-8 become U+FFFD: well-formed XML"
mkdir -p "$TMP/src/docs/img" "$TMP/src/examples" "$TMP/src/tools/plot"
cp "$ROOT"/docs/img/plots.sha256 "$ROOT"/docs/img/*.csv "$ROOT"/docs/img/*.svg "$TMP/src/docs/img/" &&
  cp "$ROOT"/examples/*.c "$ROOT"/examples/teach.h "$TMP/src/examples/" &&
  cp "$ROOT"/tools/plot/plot.c "$ROOT"/tools/plot/plot.h "$TMP/src/tools/plot/" &&
  cp "$ROOT"/tools/plots.py "$TMP/src/tools/"
"$PY" "$ROOT/tools/plots.py" check "$TMP/src" >"$TMP/out"
ok $? "plots.py check passes on a copy of the committed inputs"
echo "9,1,2,3,4" >>"$TMP/src/docs/img/exploding.csv"
"$PY" "$ROOT/tools/plots.py" check "$TMP/src" >"$TMP/out"
[ $? -eq 1 ] && grep -q '^not ok .* docs/img/exploding.csv: changed since the pictures were drawn' "$TMP/out"
ok $? "a changed CSV makes it fail, naming the file"
cp "$ROOT/docs/img/exploding.csv" "$TMP/src/docs/img/" && echo "/* */" >>"$TMP/src/tools/plot/plot.c"
"$PY" "$ROOT/tools/plots.py" check "$TMP/src" >"$TMP/out"
[ $? -eq 1 ] && [ "$(grep -c '^not ok' "$TMP/out")" -eq 1 ] && grep -q 'not ok .* tools/plot/plot.c' "$TMP/out"
ok $? "so does a change of the chart writer"
[ $fails -eq 0 ]
