"""Files and folders written whole or not at all, and never over what they must not replace."""

from __future__ import annotations

import pytest

from dynamic_tinybert import files


def test_files_refuse_to_replace_a_folder_with_a_file_and_check_a_folder_can_be_written(tmp_path):
    victim = tmp_path / "notes"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        files.atomic_write(victim, lambda path: path.write_text("{}"))
    with pytest.raises(IsADirectoryError):
        files.replace(tmp_path / "staging.json", victim)
    assert (victim / "keep.txt").read_text() == "mine" and sorted(tmp_path.iterdir()) == [victim]
    with pytest.raises(NotADirectoryError, match="is a file"):
        files.atomic_write(victim / "keep.txt", lambda staging: None, folder=True)
    files.check_writable(victim)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]  # the probe is gone
    with pytest.raises(OSError, match="cannot write in this folder"):
        files.check_writable(tmp_path / "missing")


def test_a_link_is_written_through_never_replaced(tmp_path):
    """`--out /dev/stdout` (a link to the shell's file) replaced the link with a file, as root
    even the system's /dev/stdout."""
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    files.atomic_write(link, lambda path: path.write_text("new"))
    assert link.is_symlink() and real.read_text() == "new"
