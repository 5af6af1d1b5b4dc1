#!/usr/bin/python3
"""cutfs: a FUSE file system that keeps only what was synced, to simulate a power cut.

Usage: scripts/cutfs.py BACKING MOUNTPOINT   (runs in the foreground; Debian's python3-fusepy)

Files live in BACKING. Writes and truncations go to an in-memory copy of the file and reach
BACKING only when the file is fsync'ed or fdatasync'ed (then the pages written since the last sync
are written, the size set, and BACKING's file is synced). Killing this process (SIGKILL) and unmounting is the power cut:
every write not synced is gone, as from a disk's volatile cache; mounting again shows what was
synced. Directory operations (create, unlink, rename, mkdir) go to BACKING at once: a simpler model
than a disk's, which may lose them too without an fsync of the directory.
"""

import errno
import os
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations

PAGE = 4096


class CutFs(Operations):
    def __init__(self, backing):
        self.backing = backing
        self.mutex = threading.Lock()
        # path -> bytearray: the file's contents as written, not yet synced.
        self.dirty = {}
        # path -> the 4 KiB pages written since the last sync.
        self.touched = {}

    def _full(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _content(self, path):
        """The in-memory copy, loaded from BACKING on first use."""
        content = self.dirty.get(path)
        if content is None:
            with open(self._full(path), "rb") as file:
                content = bytearray(file.read())
            self.dirty[path] = content
        return content

    # Metadata
    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._full(path))
        except OSError as error:
            raise FuseOSError(error.errno)
        attrs = {key: getattr(st, key) for key in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_atime", "st_mtime", "st_ctime")}
        with self.mutex:
            content = self.dirty.get(path)
            attrs["st_size"] = len(content) if content is not None else st.st_size
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        with self.mutex:
            self.dirty.pop(path, None)
            self.touched.pop(path, None)
            os.unlink(self._full(path))

    def rename(self, old, new):
        with self.mutex:
            os.rename(self._full(old), self._full(new))
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)
            if old in self.touched:
                self.touched[new] = self.touched.pop(old)

    # Files: every open shares the in-memory copy of its path.
    def create(self, path, mode, fi=None):
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        with self.mutex:
            self.dirty.setdefault(path, bytearray())
        return 0

    def open(self, path, flags):
        if not os.path.exists(self._full(path)):
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            return bytes(self._content(path)[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.mutex:
            content = self._content(path)
            if offset > len(content):
                content.extend(b"\0" * (offset - len(content)))
            content[offset:offset + len(data)] = data
            pages = self.touched.setdefault(path, set())
            pages.update(range(offset // PAGE, (offset + len(data) - 1) // PAGE + 1))
        return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            content = self._content(path)
            if length < len(content):
                del content[length:]
            else:
                content.extend(b"\0" * (length - len(content)))

    def fsync(self, path, datasync, fh):
        with self.mutex:
            content = self.dirty.get(path)
            if content is None:
                return 0
            pages = self.touched.pop(path, set())
            fd = os.open(self._full(path), os.O_WRONLY)
            try:
                os.ftruncate(fd, len(content))
                for page in sorted(pages):
                    chunk = bytes(content[page * PAGE:(page + 1) * PAGE])
                    if chunk:
                        os.pwrite(fd, chunk, page * PAGE)
                os.fsync(fd)
            finally:
                os.close(fd)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(CutFs(os.path.abspath(backing)), mountpoint, foreground=True, nothreads=False,
         direct_io=False)


if __name__ == "__main__":
    main()
