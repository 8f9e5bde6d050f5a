"""contextrl session server: runs *inside* a sandbox, speaks JSON lines on stdin/stdout.

One persistent bash per sandbox; a request is one line, a response is one line. This
replaces a `docker exec` per command (tens of ms) with a pipe round trip (well under a
millisecond plus the command itself). Standard library only: it must run on any
python3 >= 3.8 found in a task image.

Requests:  {"op": "exec", "cmd": str, "timeout": float, "cap": int}
           {"op": "read", "path": str}            {"op": "write", "path", "data"(b64), "mode"}
           {"op": "ping"}
Responses: {"ok": true, ...} or {"ok": false, "error": str, "errno": int|null}
"""

import base64
import errno
import json
import os
import select
import signal
import subprocess
import sys
import time

CONTAINER = "--container" in sys.argv
UID = None
GID = None
WORKDIR = os.getcwd()
for i, a in enumerate(sys.argv):
    if a == "--uid":
        UID = int(sys.argv[i + 1])
    elif a == "--gid":
        GID = int(sys.argv[i + 1])
    elif a == "--workdir":
        WORKDIR = sys.argv[i + 1]

MARK = b"\x1f"


def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as fh:
                data = fh.read()
            ppid = int(data[data.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _descendants(pid):
    kids = _children_map()
    out, stack = [], [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


class Shell:
    def __init__(self, cwd):
        self.cwd = cwd
        self.proc = None
        self.ctl_r = None
        self.start()

    def start(self):
        ctl_r, ctl_w = os.pipe()
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/tmp") if not CONTAINER else "/home/agent",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "PAGER": "cat",
            "GIT_PAGER": "cat", "PYTHONDONTWRITEBYTECODE": "1", "PIP_NO_INPUT": "1",
        }
        env["TMPDIR"] = os.environ.get("TMPDIR", "/tmp") if not CONTAINER else "/tmp"
        if not CONTAINER:
            env["PATH"] = os.environ.get("PATH", env["PATH"])
            env["HOME"] = os.environ.get("HOME", "/tmp")
        if CONTAINER and not os.path.isdir(env["HOME"]):
            env["HOME"] = "/tmp"
        kw = {}
        if UID is not None and os.getuid() == 0:
            kw["user"] = UID
            kw["group"] = GID if GID is not None else UID
            kw["extra_groups"] = []
        cwd = self.cwd if os.path.isdir(self.cwd) else "/"
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(ctl_w,), cwd=cwd, env=env, start_new_session=True, **kw
        )
        os.close(ctl_w)
        self.ctl_r = ctl_r
        init = (
            "__crl_step() { IFS= read -r -d '' __crl_c; eval \"$__crl_c\" < /dev/null; "
            "printf '%%s\\037%%s\\n' \"$?\" \"$PWD\" >&%d; }\n" % ctl_w
        )
        self.proc.stdin.write(init.encode())
        self.proc.stdin.flush()
        os.set_blocking(self.proc.stdout.fileno(), False)

    def kill(self):
        if self.proc is None:
            return
        for _ in range(50):
            pids = _descendants(self.proc.pid) + [self.proc.pid]
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            if CONTAINER:
                _kill_strays()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if not _descendants(self.proc.pid):
                break
            time.sleep(0.02)
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for fd in (self.ctl_r,):
            try:
                os.close(fd)
            except OSError:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc = None

    def restart(self):
        self.kill()
        self.start()


PROTECTED = set()


def _kill_strays():
    """In a container, everything but the processes that predate this server (init and the
    container's main process), this server and its shell belongs to a command."""
    keep = {1, os.getpid()} | PROTECTED
    if SHELL is not None and SHELL.proc is not None:
        keep.add(SHELL.proc.pid)
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in keep:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass


SHELL = None


class Capture:
    def __init__(self, cap):
        self.cap = max(1024, cap)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        half = self.cap // 2
        if len(self.head) < half:
            take = half - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if data:
            self.tail += data
            if len(self.tail) > self.cap - half:
                del self.tail[: len(self.tail) - (self.cap - half)]

    def text(self):
        shown = len(self.head) + len(self.tail)
        if shown >= self.total:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace"), False
        marker = "\n[contextrl: output truncated: %d of %d bytes not shown]\n" % (self.total - shown, self.total)
        return (self.head.decode("utf-8", "replace") + marker + self.tail.decode("utf-8", "replace")), True


def _drain(fd, capture):
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        capture.add(chunk)


def do_exec(req):
    global SHELL
    timeout = float(req.get("timeout") or 60.0)
    capture = Capture(int(req.get("cap") or 65536))
    restarted = False
    if SHELL.proc is None or SHELL.proc.poll() is not None:
        SHELL.restart()
        restarted = True
    sh = SHELL
    t0 = time.monotonic()
    payload = req["cmd"].encode("utf-8", "surrogateescape").replace(b"\x00", b"")
    try:
        sh.proc.stdin.write(b"__crl_step\n" + payload + b"\x00")
        sh.proc.stdin.flush()
    except (BrokenPipeError, OSError):
        SHELL.restart()
        return {"ok": True, "exit_code": -1, "output": "[contextrl: shell was gone; restarted]", "timed_out": False,
                "truncated": False, "duration_s": 0.0, "output_bytes": 0, "session_restarted": True}
    out_fd = sh.proc.stdout.fileno()
    ctl_buf = b""
    deadline = t0 + timeout
    timed_out = False
    exit_code = None
    out_open = True
    while True:
        now = time.monotonic()
        if now >= deadline:
            # Kill the command's processes *and* the shell running it, so the rest of a
            # command list never runs after its timeout; restart the shell in the last cwd.
            timed_out = True
            _drain(out_fd, capture)
            sh.restart()
            restarted = True
            break
        wait = deadline - now
        fds = [sh.ctl_r] + ([out_fd] if out_open else [])
        try:
            r, _, _ = select.select(fds, [], [], max(0.0, wait))
        except InterruptedError:
            continue
        if out_fd in r:
            out_open = _drain(out_fd, capture)
        if sh.ctl_r in r:
            try:
                chunk = os.read(sh.ctl_r, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                # Shell exited (the command ran `exit`, or it was killed).
                _drain(out_fd, capture)
                rc = sh.proc.wait()
                exit_code = rc if rc >= 0 else 128 - rc
                sh.restart()
                restarted = True
                break
            ctl_buf += chunk
            if b"\n" in ctl_buf:
                line = ctl_buf.split(b"\n", 1)[0]
                rc_s, _, cwd = line.partition(MARK)
                exit_code = int(rc_s) if rc_s.strip().lstrip(b"-").isdigit() else -1
                sh.cwd = cwd.decode("utf-8", "surrogateescape") or sh.cwd
                _drain(out_fd, capture)
                break
    if timed_out:
        exit_code = 124
    text, truncated = capture.text()
    return {"ok": True, "exit_code": exit_code, "output": text, "timed_out": timed_out, "truncated": truncated,
            "duration_s": time.monotonic() - t0, "output_bytes": capture.total, "session_restarted": restarted}


def _resolve(path):
    if not path.startswith("/"):
        path = os.path.join(SHELL.cwd if SHELL else WORKDIR, path)
    return path


def do_read(req):
    with open(_resolve(req["path"]), "rb") as fh:
        data = fh.read()
    return {"ok": True, "data": base64.b64encode(data).decode()}


def do_write(req):
    path = _resolve(req["path"])
    parent = os.path.dirname(path)
    created = []
    d = parent
    while d and not os.path.isdir(d):
        created.append(d)
        d = os.path.dirname(d)
    os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(base64.b64decode(req["data"]))
    os.chmod(path, int(req.get("mode") or 0o644))
    if UID is not None and os.getuid() == 0:
        for p in [path] + created:
            try:
                os.chown(p, UID, GID if GID is not None else UID)
            except OSError:
                pass
    return {"ok": True}


def main():
    global SHELL
    if CONTAINER:
        PROTECTED.update(int(n) for n in os.listdir("/proc") if n.isdigit())
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("-1000")
        except OSError:
            pass
    if CONTAINER and not os.path.isdir(WORKDIR):
        os.makedirs(WORKDIR, exist_ok=True)
        if UID is not None and os.getuid() == 0:
            os.chown(WORKDIR, UID, GID if GID is not None else UID)
    SHELL = Shell(WORKDIR)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    out.write(b'{"ok": true, "ready": true, "pid": %d}\n' % os.getpid())
    out.flush()
    ops = {"exec": do_exec, "read": do_read, "write": do_write, "ping": lambda r: {"ok": True}}
    for line in inp:
        try:
            req = json.loads(line)
            resp = ops[req["op"]](req)
        except OSError as e:
            resp = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "errno": e.errno}
        except Exception as e:  # noqa: BLE001 - the server must answer, never die
            resp = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "errno": None}
        out.write(json.dumps(resp).encode() + b"\n")
        out.flush()
    if SHELL is not None:
        SHELL.kill()


if __name__ == "__main__":
    main()
