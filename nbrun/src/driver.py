# qi-nb's execution driver: runs one notebook cell by cell with nbclient (Jupyter's own machinery)
# and reports progress to qi-nb as JSON lines prefixed with "@@qi-nb ". qi-nb passes one JSON
# argument: {"mode": "preflight"|"run", ...}. Exit codes: 0 ok, 1 a cell failed or timed out,
# 3 Python packages missing, 4 kernel missing, 5 kernel failed to start.
import json
import logging
import os
import shutil
import sys
import time

# nbclient leaves the output poller of a timed-out cell to fail on its own; asyncio would print
# "Task exception was never retrieved" for it. The timeout itself is reported by qi-nb.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def emit(**event):
    sys.stdout.write("@@qi-nb " + json.dumps(event) + "\n")
    sys.stdout.flush()


cfg = json.loads(sys.argv[1])

try:
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from jupyter_core.utils import run_sync
except ImportError as e:
    emit(event="missing_python_package", error=str(e), python=sys.executable)
    sys.exit(3)


def kernel_problem(name):
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return "no Jupyter kernel named '%s' is registered" % name
    exe = spec.argv[0] if spec.argv else ""
    if os.path.isabs(exe) and not os.path.exists(exe):
        return "kernel '%s' points at %s, which does not exist" % (name, exe)
    return None


if cfg["mode"] == "preflight":
    problems = {k: kernel_problem(k) for k in cfg["kernels"]}
    emit(event="preflight", nbclient=nbclient.__version__, python=sys.executable,
         problems={k: v for k, v in problems.items() if v})
    sys.exit(4 if any(problems.values()) else 0)

path = cfg["notebook"]  # prepared by qi-nb (parameters applied); executed in place
nb = nbformat.read(path, as_version=4)
kernel_log = open(cfg["kernel_log"], "w")


def write():
    tmp = path + ".tmp-%d" % os.getpid()
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def panic_text(cell):
    """The panic message a Rust cell printed on stderr (without the backtrace), if any."""
    err = "".join(o.get("text", "") for o in cell.get("outputs", [])
                  if o.get("output_type") == "stream" and o.get("name") == "stderr")
    lines = err.splitlines()
    for k, line in enumerate(lines):
        if " panicked at " in line:
            out = [line]
            for more in lines[k + 1:]:
                if more.startswith("stack backtrace:") or more.startswith("note: run with"):
                    break
                out.append(more)
            return "\n".join(out)
    return ""


def error_text(cell):
    panic = panic_text(cell)
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            tb = "\n".join(out.get("traceback") or [])
            if tb.strip() == str(out.get("evalue")).strip():
                tb = ""
            text = "%s: %s%s" % (out.get("ename"), out.get("evalue"), ("\n" + tb) if tb else "")
            return (panic + "\n(" + text + ")") if panic else text
    return panic


def run_setup(code):
    """Runs a kernel command outside the notebook (its output is not recorded)."""
    nb.cells.append(nbformat.v4.new_code_cell(code))
    try:
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    finally:
        nb.cells.pop()


client = NotebookClient(
    nb,
    timeout=cfg["cell_timeout"],
    kernel_name=cfg["kernel"],
    resources={"metadata": {"path": cfg["cwd"]}},
    allow_errors=False,
    startup_timeout=cfg["startup_timeout"],
    record_timing=True,
)

run_meta = nb.metadata.setdefault("qi_nb", {})
t_start = time.time()
deadline = t_start + cfg["timeout"]
failed = []
status = "ok"


def finish(code):
    run_meta["status"] = status
    run_meta["failed_cells"] = failed
    run_meta["seconds"] = round(time.time() - t_start, 1)
    write()
    emit(event="done", status=status, failed=failed, seconds=run_meta["seconds"])
    sys.exit(code)


def stderr_text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr").strip()


code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
started = False
previous = None  # (index, stderr text) of the previous code cell
try:
    with client.setup_kernel(stdout=kernel_log, stderr=kernel_log):
        started = True
        for code in cfg.get("setup", []):
            run_setup(code)
        # after a setup command the kernel has finished its start-up build (see run.rs)
        if cfg.get("cargo_lock") and cfg.get("evcxr_tmpdir"):
            shutil.copyfile(cfg["cargo_lock"], os.path.join(cfg["evcxr_tmpdir"], "Cargo.lock"))
        for n, i in enumerate(code_cells):
            cell = nb.cells[i]
            remaining = deadline - time.time()
            if remaining <= 0:
                status = "timeout"
                failed.append({"cell": i, "error": "notebook timeout (%ds) reached before this cell" % cfg["timeout"]})
                emit(event="skipped", index=i, reason="notebook timeout")
                break
            has_dep = any(line.lstrip().startswith(":dep") for line in cell.source.splitlines())
            limit = cfg["dep_timeout"] if has_dep else cfg["cell_timeout"]
            limit = max(1, min(limit, remaining))
            client.timeout = int(limit)
            emit(event="start", index=i, n=n + 1, total=len(code_cells), timeout=int(limit))
            t0 = time.time()
            result, error = "ok", ""
            try:
                client.execute_cell(cell, i)
            except CellTimeoutError:
                result = "timeout"
                why = "notebook timeout (%ds)" % cfg["timeout"] if limit < (cfg["dep_timeout"] if has_dep else cfg["cell_timeout"]) else "cell timeout (%ds)" % limit
                error = "cell did not finish within the %s" % why
                cell.outputs.append(nbformat.v4.new_output("error", ename="CellTimeoutError", evalue=error, traceback=[error]))
            except CellExecutionError:
                result = "error"
                error = error_text(cell) or "cell failed"
                if previous and previous[1] and not panic_text(cell):
                    # evcxr prints an error returned with `?` at the top level of a cell on stderr
                    # and reports the cell as successful, dropping its new variables; the next
                    # cell then fails to compile. Point at the likely cause.
                    error += ("\n(note: the previous code cell %d wrote to stderr:\n  %s\n"
                              " evcxr reports an error returned with `?` only there and goes on without that"
                              " cell's variables; use .expect(\"…\") so such failures stop the cell)"
                              % (previous[0], previous[1][-500:].replace("\n", "\n  ")))
            except DeadKernelError as e:
                result = "error"
                error = "the kernel died: %s" % e
                cell.outputs.append(nbformat.v4.new_output("error", ename="DeadKernelError", evalue=str(e), traceback=[str(e)]))
            dt = time.time() - t0
            previous = (i, stderr_text(cell))
            cell.metadata["qi_nb"] = {"seconds": round(dt, 2), "status": result}
            write()
            emit(event="end", index=i, n=n + 1, total=len(code_cells), seconds=round(dt, 2), status=result, error=error)
            if result != "ok":
                failed.append({"cell": i, "status": result, "error": error[:2000]})
                if status == "ok":
                    status = result
                if result == "timeout" and time.time() >= deadline:
                    break
                if not cfg["keep_going"]:
                    break
                if result == "timeout":
                    # stop the runaway cell so the next one can run (evcxr restarts its subprocess)
                    try:
                        run_sync(client.km.interrupt_kernel)()
                        # kernel_info is answered only once the kernel is idle again; this also
                        # drops the interrupted cell's late reply
                        run_sync(client.kc.wait_for_ready)(timeout=cfg["startup_timeout"])
                    except Exception as e:
                        emit(event="note", text="could not interrupt the kernel: %s" % e)
except (RuntimeError, TimeoutError) as e:
    if started:
        raise
    # the kernel did not start (or died during start-up)
    status = "kernel_start_failed"
    failed.append({"cell": None, "error": str(e)})
    run_meta["status"] = status
    write()
    emit(event="kernel_start_failed", error=str(e), log=cfg["kernel_log"])
    sys.exit(5)

finish(1 if failed else 0)
