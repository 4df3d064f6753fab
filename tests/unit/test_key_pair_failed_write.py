"""Review of ``save_key_pair`` (both files created exclusively).

Both files were created, then written: a write that failed (a full disk, a quota: ENOSPC, EDQUOT) left
NAME.key and NAME.pub behind, empty or cut short, and the public file's descriptor open. ``keys new``
said it could not write the pair, and every later ``keys new --name NAME`` was refused because those
broken files "exist" (a key file is never overwritten). Now a pair that cannot be written whole leaves
neither file."""
from __future__ import annotations

import errno
import io
import os

import pytest

import scheduler.identity as identity
from scheduler.identity import generate_key, save_key_pair


class DiskFull:
    """``os`` as ``scheduler.identity`` sees it, on a disk where the file ending in ``suffix`` cannot be
    written (the files are created: the directory has room for their entries, not their contents)."""

    def __init__(self, suffix: str) -> None:
        self.suffix, self.paths, self.opened = suffix, {}, []

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777):
        fd = os.open(path, flags, mode)
        self.paths[fd] = str(path)
        self.opened.append(fd)
        return fd

    def _full(self, fd) -> bool:
        return self.paths.get(fd, "").endswith(self.suffix)

    def write(self, fd, data):
        if self._full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def fdopen(self, fd, mode="r", *args, **kwargs):
        f = os.fdopen(fd, mode, *args, **kwargs)
        if not self._full(fd):
            return f
        full = OSError(errno.ENOSPC, "No space left on device")

        class Full(io.IOBase):
            def write(self, data):
                raise full

            def close(self):
                f.close()
                super().close()
        return Full()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("suffix", [".key", ".pub"])
def test_a_pair_that_cannot_be_written_whole_leaves_no_file(tmp_path, monkeypatch, suffix):
    disk = DiskFull(suffix)
    monkeypatch.setattr(identity, "os", disk)
    with pytest.raises(OSError) as raised:
        save_key_pair(generate_key(), tmp_path, "alice")
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a broken half of the pair was left behind"
    assert disk.opened and not any(_is_open(fd) for fd in disk.opened), "a key file's descriptor was left open"
    private, public = save_key_pair(generate_key(), tmp_path, "alice")  # the name is free again
    assert private.exists() and public.exists()
