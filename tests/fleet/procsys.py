#!/usr/bin/env python3
"""The fleet's fake /proc/sys: one FUSE filesystem per fleet, serving every host.

Usage: procsys.py HOSTS_DIR MOUNTPOINT   (runs in the foreground until unmounted
or killed; run by tests/fleet/fleet.sh with the venv's python, mfusepy + libfuse3)

MOUNTPOINT/NAME/KEY is served from the plain file HOSTS_DIR/NAME/fs/proc/sys/KEY
(the "backing file", which tests read and stat directly). Each fleet host
bind-mounts MOUNTPOINT/NAME onto its /proc/sys, so the real sysctl(8) and
shells inside the host meet procfs' semantics for integer sysctls
(proc_dointvec / proc_dointvec_minmax, sysctl_writes_strict=1):

- read at offset 0 returns the value ("N\\n", cut to the size asked for); any
  read at an offset > 0 returns end-of-file, so dash's `read`, which reads one
  byte at a time, gets only the first digit, as on a real kernel;
- stat says: regular file, mode 0644, owner root, size 0;
- a write at offset 0 is parsed as the kernel parses an int: leading white
  space, an optional '-', digits in C base 0 (0x.. hex, 0.. octal), then white
  space or the end; anything else, an out-of-range value or nothing but white
  space fails with EINVAL and changes nothing. A value it takes replaces the
  backing file, atomically, with "N\\n" (the file's mtime is when it was set);
- a write at an offset > 0 is accepted and ignored (what pwrite(2) at an
  offset gets from the kernel); truncation (O_TRUNC, as fopen "w" asks) is a
  no-op, as on procfs;
- directories list "." and ".." first (procps' `sysctl -a` skips the first two
  entries unread); creating a name fails with ENOENT, removing one with
  EACCES, chmod/chown with EPERM, as on procfs.

Names starting with '.' in the backing folders are not served (the temporary
files of the atomic replace).
"""

import errno
import os
import stat
import sys
import threading

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

from mfusepy import FUSE, FuseOSError, Operations  # noqa: E402

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
ULONG_MAX = 2**64 - 1
# (min, max) of the proc_dointvec_minmax sysctls; every other key is a plain
# proc_dointvec int (INT_MIN..INT_MAX).
RANGES = {
    "vm/panic_on_oom": (0, 2),
    "vm/overcommit_memory": (0, 2),
    "kernel/keys/maxkeys": (1, INT_MAX),
    "kernel/keys/maxbytes": (1, INT_MAX),
    "kernel/keys/root_maxkeys": (1, INT_MAX),
    "kernel/keys/root_maxbytes": (1, INT_MAX),
}
SPACE = b" \t\n\v\f\r"  # isspace(): what proc_skip_spaces skips
SEP = b" \t\n"  # what may follow the number (proc_wspace_sep)
TMPBUFLEN = 22  # the kernel copies at most TMPBUFLEN-1 bytes to parse a number


def parse_int(data: bytes, lo: int = INT_MIN, hi: int = INT_MAX) -> int:
    """The value a write of DATA at offset 0 sets, as __do_proc_dointvec
    parses one int (proc_get_long, strtoul base 0); ValueError if the kernel
    says EINVAL."""
    p = data.lstrip(SPACE)
    if not p:
        raise ValueError("no number")
    tok = p[: TMPBUFLEN - 1]
    i, neg = 0, False
    if tok[:1] == b"-" and len(p) > 1:
        i, neg = 1, True
    if not tok[i : i + 1].isdigit():
        raise ValueError("not a number")
    base, digits = 10, b"0123456789"
    if tok[i : i + 1] == b"0":
        if tok[i + 1 : i + 2] in (b"x", b"X") and tok[i + 2 : i + 3] and tok[i + 2 : i + 3] in b"0123456789abcdefABCDEF":
            base, digits, i = 16, b"0123456789abcdefABCDEF", i + 2
        else:
            base, digits = 8, b"01234567"
    j = i
    while j < len(tok) and tok[j : j + 1] in digits:
        j += 1
    if j == TMPBUFLEN - 1:
        raise ValueError("number too long")
    val = int(tok[i:j], base)
    if val > ULONG_MAX:
        raise ValueError("overflow")
    if j < len(p) and p[j : j + 1] not in SEP:
        raise ValueError("junk after the number")
    if neg:
        if val > INT_MAX + 1:
            raise ValueError("out of int range")
        val = -val
    elif val > INT_MAX:
        raise ValueError("out of int range")
    if not lo <= val <= hi:
        raise ValueError("out of range")
    return val


class ProcSys(Operations):
    use_ns = True

    def __init__(self, hosts: str):
        self.hosts = os.path.realpath(hosts)
        self.wlock = threading.Lock()

    def _split(self, path: str):
        """(NAME, KEY, backing path) of PATH ("/NAME/KEY..."); KEY may be ""."""
        parts = [c for c in path.split("/") if c]
        if any(c.startswith(".") for c in parts):
            raise FuseOSError(errno.ENOENT)
        if not parts:
            return "", "", None
        name, key = parts[0], "/".join(parts[1:])
        return name, key, os.path.join(self.hosts, name, "fs/proc/sys", key)

    def getattr(self, path, fh=None):
        name, key, real = self._split(path)
        if real is None:
            st = os.stat(self.hosts)
        else:
            try:
                st = os.stat(real)
            except OSError as e:
                raise FuseOSError(e.errno or errno.ENOENT)
        times = {"st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}
        if stat.S_ISDIR(st.st_mode):
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_uid": 0, "st_gid": 0, "st_size": 0, **times}
        if stat.S_ISREG(st.st_mode) and key:
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_uid": 0, "st_gid": 0, "st_size": 0, **times}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        name, key, real = self._split(path)
        try:
            if real is None:
                names = [n for n in os.listdir(self.hosts) if os.path.isdir(os.path.join(self.hosts, n, "fs/proc/sys"))]
            else:
                names = os.listdir(real)
        except OSError as e:
            raise FuseOSError(e.errno or errno.ENOENT)
        return [".", ".."] + sorted(n for n in names if not n.startswith("."))

    def _file(self, path):
        """(KEY, backing path) of the sysctl file PATH, else ENOENT/EISDIR."""
        name, key, real = self._split(path)
        if real is not None and key and os.path.isfile(real):
            return key, real
        raise FuseOSError(errno.EISDIR if real is None or os.path.isdir(real) else errno.ENOENT)

    def open(self, path, flags):
        self._file(path)
        return 0

    def read(self, path, size, offset, fh):
        _, real = self._file(path)
        if offset > 0:
            return b""
        with open(real, "rb") as f:
            return f.read()[:size]

    def write(self, path, data, offset, fh):
        key, real = self._file(path)
        if offset > 0 or not data:
            return len(data)
        try:
            val = parse_int(data, *RANGES.get(key, (INT_MIN, INT_MAX)))
        except ValueError:
            raise FuseOSError(errno.EINVAL)
        d, b = os.path.split(real)
        with self.wlock:
            tmp = os.path.join(d, f".{b}.{threading.get_ident()}")
            with open(tmp, "w") as f:
                f.write(f"{val}\n")
            os.replace(tmp, real)
        return len(data)

    def truncate(self, path, length, fh=None):
        self._file(path)
        return 0

    def utimens(self, path, times=None):
        self._file(path)
        return 0

    # What procfs answers to the rest: no new names, no removal, no chmod.
    def chmod(self, path, mode):
        raise FuseOSError(errno.EPERM)

    def chown(self, path, uid, gid):
        raise FuseOSError(errno.EPERM)

    def create(self, path, mode, fi=None):
        raise FuseOSError(errno.ENOENT)

    def mkdir(self, path, mode):
        raise FuseOSError(errno.ENOENT)

    def mknod(self, path, mode, dev):
        raise FuseOSError(errno.ENOENT)

    def symlink(self, target, source):
        raise FuseOSError(errno.ENOENT)

    def link(self, target, source):
        raise FuseOSError(errno.ENOENT)

    def rename(self, old, new):
        raise FuseOSError(errno.ENOENT)

    def unlink(self, path):
        raise FuseOSError(errno.EACCES)

    def rmdir(self, path):
        raise FuseOSError(errno.EACCES)


def main(argv):
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    hosts, mountpoint = argv[1], argv[2]
    # Single-threaded: every request is a quick local file operation, and with
    # 200 hosts starting at once one thread answers 3x faster than libfuse's
    # thread pool contending for the GIL.
    FUSE(
        ProcSys(hosts),
        mountpoint,
        foreground=True,
        nothreads=True,
        allow_other=True,
        default_permissions=True,
        direct_io=True,
        fsname="khard-procsys",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
