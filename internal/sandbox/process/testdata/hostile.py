# A hostile Python function: it tries to escape the sandbox and prints one
# line per attempt, "name=ok" or "name=denied:<errno>". Arguments come from
# the environment (set by the test).
import ctypes, errno, os, socket, sys

def attempt(name, fn):
    try:
        fn()
        print(name + "=ok", flush=True)
    except OSError as e:
        print(name + "=denied:" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)

def read(path):
    with open(path, "rb") as f:
        f.read()

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.close()

libc = ctypes.CDLL(None, use_errno=True)

def check(ret):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def forkbomb():
    pids = []
    try:
        while len(pids) < 5000:
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(3600)
                os._exit(0)
            pids.append(pid)
    finally:
        for p in pids:
            os.kill(p, 9)
            os.waitpid(p, 0)
        print("forkbomb-count=%d" % len(pids), flush=True)

def filltmp():
    chunk = b"x" * (1 << 20)
    try:
        with open("/tmp/fill", "wb") as f:
            for _ in range(2048):
                f.write(chunk)
                f.flush()
    finally:
        os.remove("/tmp/fill")

env = os.environ
attempt("read-data", lambda: read(env["HOSTILE_DATA_FILE"]))
attempt("read-token", lambda: read(env["HOSTILE_TOKEN_FILE"]))
attempt("read-other-code", lambda: read(env["HOSTILE_OTHER_CODE"]))
attempt("list-root", lambda: os.listdir("/root"))
attempt("list-home", lambda: os.listdir("/home"))
attempt("read-host-proc", lambda: read("/proc/%s/status" % env["HOSTILE_HOST_PID"]))
attempt("kill-host-pid", lambda: os.kill(int(env["HOSTILE_HOST_PID"]), 9))
attempt("connect-host-port", lambda: connect(int(env["HOSTILE_HOST_PORT"])))
attempt("mount", lambda: check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)))
attempt("ptrace", lambda: check(libc.ptrace(16, 1, None, None)))  # PTRACE_ATTACH
attempt("unshare-user", lambda: check(libc.unshare(0x10000000)))  # CLONE_NEWUSER
attempt("write-code", lambda: open("/var/task/x", "w").close())
attempt("write-tmp", lambda: open("/tmp/x", "w").close())
attempt("forkbomb", forkbomb)
attempt("fill-tmp", filltmp)
attempt("kill-all", lambda: os.kill(-1, 9))
print("uid=%d" % os.getuid(), flush=True)
print("done", flush=True)
