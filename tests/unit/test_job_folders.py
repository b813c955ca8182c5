"""Removing a finished job's folder: by name when it holds only what the
worker made, by a walk when the job left more, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zbrain.worker._process import _remove_folder, _write_new


def job_folder(root: Path) -> Path:
    """A folder as the worker leaves it for a job: input, artifacts folder."""
    folder = root / "zbrain-job-1-x"
    folder.mkdir()
    _write_new(folder / "input.json", b'{"n": 1}')
    (folder / "artifacts").mkdir()
    return folder


def test_a_folder_holding_only_the_workers_files_is_removed(tmp_path: Path) -> None:
    folder = job_folder(tmp_path)
    (folder / "output.json").write_text("{}")
    (folder / "parents.json").write_text("[]")

    _remove_folder(folder)

    assert not folder.exists()


@pytest.mark.parametrize(
    "leave",
    [
        lambda folder: (folder / "a" / "b").mkdir(parents=True),
        lambda folder: (folder / "artifacts" / "report.txt").write_text("x"),
        lambda folder: (folder / "output.json").mkdir(),
    ],
    ids=["a folder of its own", "an artifact", "output.json a folder"],
)
def test_a_folder_the_job_added_to_is_removed_whole(tmp_path: Path, leave) -> None:
    folder = job_folder(tmp_path)
    leave(folder)

    _remove_folder(folder)

    assert not folder.exists()


def test_a_link_the_job_left_is_removed_and_what_it_points_to_is_not(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    folder = job_folder(tmp_path)
    os.rmdir(folder / "artifacts")
    (folder / "artifacts").symlink_to(outside)
    (folder / "input.json").unlink()
    (folder / "input.json").symlink_to(outside / "keep.txt")

    _remove_folder(folder)

    assert not folder.exists()
    assert (outside / "keep.txt").read_text() == "kept"


def test_writing_a_job_file_refuses_one_already_there(tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text("planted")

    with pytest.raises(FileExistsError):
        _write_new(tmp_path / "input.json", b"{}")

    assert (tmp_path / "input.json").read_text() == "planted"
