"""c_fixture.py: the C arrays of doubles that the gen_*_fixtures scripts
write into the tests' fixture headers (and their comments), and the other
bits of C text they share. The torch side (inputs, tensors) is in
tools/torch_fixture.py."""
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


def emitter(out):
    """emit(name, values): appends to the list out the C array `name` of
    the values (a sequence of numbers); returns name."""
    def emit(name, values):
        out.append(c_double_array(name, values))
        return name
    return emit


def c_bool(v):
    """v as a C bool: true or false."""
    return "true" if v else "false"


def c_ident(name):
    """A dotted PyTorch name (a state dict's key) as a C identifier: the
    dots become underscores."""
    return name.replace(".", "_")


def print_guarded(guard, lines, includes=()):
    """Prints (to stdout) the body of a fixture header after its opening
    comment: the include guard `guard`, `#include <h>` for each h of
    includes, then the lines between `clang-format off` and `on`, a blank
    line either side, and the closing #endif."""
    print(f"#ifndef {guard}")
    print(f"#define {guard}")
    for h in includes:
        print(f"#include <{h}>")
    print("/* clang-format off */")
    print()
    for line in lines:
        print(line)
    print()
    print("/* clang-format on */")
    print("#endif")


def print_param_tables(prefix, count, state, arrays=True):
    """Prints (to stdout) the C tables of a state dict (name -> tensor, in
    its order), `count` being the C constant of its length:
    <prefix>_param_names, then (when arrays) <prefix>_params pointing at
    the arrays <prefix>_p_<c_ident(name)>, then <prefix>_param_sizes."""
    print(f"static const char *const {prefix}_param_names[{count}] = {{")
    print("".join(f'    "{n}",\n' for n in state) + "};")
    if arrays:
        print(f"static const double *const {prefix}_params[{count}] = {{")
        print("".join(f"    {prefix}_p_{c_ident(n)},\n" for n in state) + "};")
    print(f"static const int64_t {prefix}_param_sizes[{count}] = {{")
    print("".join(f"    {state[n].numel()},\n" for n in state) + "};")
