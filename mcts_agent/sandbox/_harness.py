"""The in-sandbox harness: runs one untrusted program (and, in test mode, its tests) and
reports the verdict through a private pipe.

Self-contained (stdlib only, never imports mcts_agent): the sandbox runs this file's source with
``python -I -c``. argv: ``job_fd verdict_fd cpu_s memory_mb processes file_size_mb open_files``.
The job (JSON: nonce, mode, program, setup, tests, path) is read in full from ``job_fd`` before
any untrusted code runs; hidden tests therefore never touch the sandbox's disk. Each verdict line
is ``<nonce> <kind> <hex payload>``; the parent ignores stdout for verdicts and treats a missing
``done`` line, or any line without the nonce, as no verdict.
"""

import ast
import builtins
import linecache
import os
import resource
import sys
import traceback

_NOFORWARD = object()


def _set_limits(argv):
    """rlimits first, before anything untrusted runs (hard = soft so they cannot be raised)."""
    cpu, memory, procs, fsize, nofile = (float(argv[0]), int(argv[1]), int(argv[2]),
                                         int(argv[3]), int(argv[4]))
    cpu_s = max(1, int(cpu + 0.999))
    limits = [(resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
              (resource.RLIMIT_AS, memory << 20, memory << 20),
              (resource.RLIMIT_NPROC, procs, procs),
              (resource.RLIMIT_FSIZE, fsize << 20, fsize << 20),
              (resource.RLIMIT_NOFILE, nofile, nofile),
              (resource.RLIMIT_CORE, 0, 0)]
    for kind, soft, hard in limits:
        resource.setrlimit(kind, (soft, hard))


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _reporter(fd, nonce, write=os.write, encode=str.encode):
    """The only function that writes verdicts; it holds its own references, so patching
    ``os.write`` or ``json`` from the program cannot reroute or rewrite a verdict."""
    def report(kind, payload=""):
        data = encode(payload, "utf-8", "replace").hex()
        write(fd, encode(nonce + " " + kind + " " + data + "\n"))
    return report


def _short_error(exc, tb_limit=-4):
    """``Type: message`` and the last frames of the traceback, without harness frames."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=tb_limit)
    text = "".join(line for line in lines if 'File "<string>"' not in line)
    return text[-2000:]


def _syntax_error(exc):
    return f"SyntaxError: {exc.msg} (line {exc.lineno})"


# -- strict comparisons inside test code: an "always equal" object cannot pass ----------------

_SCALARS = frozenset([int, float, complex, bool, str, bytes, type(None)])
_CONTAINERS = frozenset([list, tuple, set, frozenset])


def _trusted_numbers():
    import decimal
    import fractions
    return frozenset([decimal.Decimal, fractions.Fraction])


_TRUSTED = _trusted_numbers()


def _plain(value, depth=0, type=type, len=len):
    """Data made only of builtin types (exact types, no subclasses that could override ==)."""
    kind = type(value)
    if kind in _SCALARS or kind in _TRUSTED:
        return True
    if depth > 50:
        return False
    if kind in _CONTAINERS:
        return all(_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _make_cmp(op_module):
    ops = {"Eq": op_module.eq, "NotEq": op_module.ne, "Lt": op_module.lt,
           "LtE": op_module.le, "Gt": op_module.gt, "GtE": op_module.ge,
           "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
           "Is": op_module.is_, "IsNot": op_module.is_not}
    strict = frozenset(["Eq", "NotEq", "Lt", "LtE", "Gt", "GtE"])

    def compare(names, *operands):
        for index, name in enumerate(names):
            left, right = operands[index], operands[index + 1]
            if name in strict and _plain(left) != _plain(right):
                # a custom object against plain data: only identity-free builtins may match
                if name == "NotEq":
                    continue
                return False
            if not ops[name](left, right):
                return False
        return True

    arith = {"Add": op_module.add, "Sub": op_module.sub, "Mult": op_module.mul,
             "Div": op_module.truediv, "FloorDiv": op_module.floordiv, "Mod": op_module.mod,
             "Pow": op_module.pow}

    def arithmetic(name, left, right):
        if _plain(left) != _plain(right):  # e.g. a returned object whose __sub__ gives 0
            raise TypeError(f"test arithmetic between {type(left).__name__} and "
                            f"{type(right).__name__}: only plain data is compared")
        return arith[name](left, right)

    def truth(value):
        if not _plain(value):
            name = type(value).__name__
            raise AssertionError(f"test asserted the truth of a {name} object, not plain data")
        return bool(value)
    return compare, arithmetic, truth


class _Strict(ast.NodeTransformer):
    """Rewrites comparisons and asserts in *test* code to the strict helpers."""

    def visit_Compare(self, node):
        self.generic_visit(node)
        names = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        return ast.Call(ast.Name("__sandbox_compare__", ast.Load()),
                        [names, node.left, *node.comparators], [])

    def visit_BinOp(self, node):
        self.generic_visit(node)
        name = type(node.op).__name__
        if name not in ("Add", "Sub", "Mult", "Div", "FloorDiv", "Mod", "Pow"):
            return node
        return ast.Call(ast.Name("__sandbox_arith__", ast.Load()),
                        [ast.Constant(name), node.left, node.right], [])

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = ast.Call(ast.Name("__sandbox_truth__", ast.Load()), [node.test], [])
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = ast.Call(ast.Name("__sandbox_truth__", ast.Load()),
                                    [node.operand], [])
        return node


def _remember(source, name):
    """Source lines for tracebacks (``File "<test 0>", line 2`` then the line itself)."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)


def _compile_test(source, name):
    _remember(source, name)
    tree = _Strict().visit(ast.parse(source, name))
    return compile(ast.fix_missing_locations(tree), name, "exec")


# -- modes -------------------------------------------------------------------------------------

def _run_mode(job, report):
    """Run the program as ``__main__``; report ok / error / exit and ``__result__`` if plain."""
    try:
        _remember(job["program"], "<program>")
        code = compile(job["program"], "<program>", "exec")
    except SyntaxError as exc:
        report("error", _syntax_error(exc))
        return 1
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    status = 0
    try:
        exec(code, namespace)
        report("ok")
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        report("exit", str(status))
    except BaseException as exc:
        report("error", _short_error(exc))
        status = 1
    result = namespace.get("__result__", _NOFORWARD)
    if result is not _NOFORWARD and type(result) in _SCALARS and type(result) is not complex:
        report("result", repr(result))
    return status


def _test_mode(job, report, snapshot):
    program, setup, tests = job["program"], job["setup"], list(job["tests"])
    try:
        _remember(program, "<program>")
        code = compile(program, "<program>", "exec")
        setup_code = _compile_test(setup, "<setup>")
        test_codes = [_compile_test(test, f"<test {i + 1}>") for i, test in enumerate(tests)]
    except SyntaxError as exc:
        where = exc.filename if exc.filename != "<program>" else "program"
        report("error", _syntax_error(exc) + ("" if where == "program" else " in " + where))
        return
    compare, arithmetic, truth = _make_cmp(__import__("operator"))
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit too: a program that exits has no tests run
        report("error", _short_error(exc))
        return
    for index, test_code in enumerate(test_codes):
        _restore_builtins(snapshot)
        scope = dict(namespace)  # the program's names; the tests' builtins stay private
        scope.update(__builtins__=dict(snapshot), __sandbox_compare__=compare,
                     __sandbox_arith__=arithmetic, __sandbox_truth__=truth)
        try:
            exec(setup_code, scope)
            exec(test_code, scope)
            report("test", f"{index} 1 ")
        except BaseException as exc:
            report("test", f"{index} 0 {_short_error(exc)}")


def _restore_builtins(snapshot):
    """Undo a program's patches to the builtins module (``builtins.len = …``)."""
    current = builtins.__dict__
    for name in list(current):
        if name not in snapshot:
            del current[name]
    for name, value in snapshot.items():
        if current.get(name, _NOFORWARD) is not value:
            current[name] = value


def main(argv=sys.argv):
    job_fd, verdict_fd = int(argv[1]), int(argv[2])
    _set_limits(argv[3:8])
    import json
    job = json.loads(_read_all(job_fd))
    report = _reporter(verdict_fd, job.pop("nonce"))
    sys.path.extend(job.get("path") or [])
    os.set_inheritable(verdict_fd, False)  # programs it starts never hold the channel
    snapshot = dict(builtins.__dict__)
    if job["mode"] == "tests":
        _test_mode(job, report, snapshot)
        status = 0
    else:
        status = _run_mode(job, report)
    report("done")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status if isinstance(status, int) and 0 <= status < 256 else 1)


if __name__ == "__main__":
    main()
