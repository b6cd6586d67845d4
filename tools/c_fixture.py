"""c_fixture.py: the C arrays of doubles that the gen_*_fixtures scripts
write into the tests' fixture headers (and their comments)."""
import math


def c_double(v):
    """v as a C expression: repr (the shortest digits that round-trip),
    or NAN / INFINITY / -INFINITY from <math.h>."""
    v = float(v)
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return repr(v)


def c_double_array(name, values):
    """`static const double name[n] = {...};`, in lines of at most 100
    columns."""
    items = [c_double(v) for v in values]
    lines, line = [], "   "
    for s in items:
        item = f" {s},"
        if len(line) + len(item) > 100:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    body = "\n".join(lines)
    return f"static const double {name}[{len(items)}] = {{\n{body}\n}};"
