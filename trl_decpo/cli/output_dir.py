# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``trl-decpo train``'s output folder: never clobber an earlier run silently. Resume it, start over only when asked
(``--overwrite_output_dir``), or refuse, before any loading; decided on the main process for every process. And for
every command: a folder that a failed command created and left empty is removed (:func:`removed_if_left_empty`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys


RESUME_LAST = ("true", "True", "last")
RESUME_OFF = (False, "false", "False", "")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def plan_output_dir(output_dir: str, resume_from_checkpoint, overwrite: bool, inputs: tuple[str, ...] = ()):
    """What to do with ``output_dir``: ``(resume value for Trainer.train, message, entries to delete)``; raises a
    ``ValueError`` instead of clobbering an earlier run. Pure: reads the folder, changes nothing."""
    from transformers.trainer_utils import get_last_checkpoint

    resume = resume_from_checkpoint
    if isinstance(resume, str) and resume in RESUME_LAST:
        resume = True
    if resume in RESUME_OFF:
        resume = None
    if resume is not None and overwrite:
        raise ValueError("`resume_from_checkpoint` continues a run and `overwrite_output_dir` starts over: pass one")
    existing = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if resume is True:
        last = get_last_checkpoint(output_dir) if existing else None
        if last is None:
            raise ValueError(
                f"`resume_from_checkpoint` asks for the last checkpoint in `output_dir` {output_dir!r}, "
                "which holds none (`checkpoint-<step>` folders); drop it to start a new run"
            )
        checkpoint = last
    elif resume is not None:
        checkpoint = resume
        if not os.path.isdir(checkpoint):
            raise ValueError(f"`resume_from_checkpoint` {checkpoint!r} is not a checkpoint folder")
        if existing and not _inside(checkpoint, output_dir):
            raise ValueError(
                f"`resume_from_checkpoint` {checkpoint!r} lies outside `output_dir` {output_dir!r}, which "
                f"already holds {existing[:5]}: continuing there would mix two runs. Resume into an "
                "empty `--output_dir`, or into the folder the checkpoint belongs to."
            )
    if resume is not None:
        note = (
            ""
            if os.path.isfile(os.path.join(checkpoint, "optimizer.pt"))
            else (
                " (it holds no optimizer state, e.g. `save_only_model`: the optimizer and scheduler restart, so the run "
                "will not match an uninterrupted one)"
            )
        )
        return (
            True if resume is True else checkpoint,
            f"resuming the run in {output_dir} from {os.path.basename(os.path.normpath(checkpoint))}{note}",
            [],
        )
    if not existing:
        return None, None, []
    checkpoints = [name for name in existing if name.startswith("checkpoint-")]
    if not overwrite:
        what = f"a run with checkpoints {checkpoints}" if checkpoints else f"files {existing[:5]}"
        hint = "`--resume_from_checkpoint true` to continue it from the last checkpoint, " if checkpoints else ""
        raise ValueError(
            f"`output_dir` {output_dir!r} already holds {what}. Pass {hint}`--overwrite_output_dir true` "
            "to start a new run there (everything in it is deleted first), or choose an empty "
            "`--output_dir`."
        )
    used = [path for path in inputs if path and os.path.exists(path) and _inside(path, output_dir)]
    if used:
        raise ValueError(
            f"`--overwrite_output_dir` would delete {used}, which this run reads: choose another `--output_dir`"
        )
    return None, f"starting a new run in {output_dir} (--overwrite_output_dir: deleted {existing})", existing


def prepare_output_dir(output_dir: str, resume_from_checkpoint, overwrite: bool, inputs: tuple[str, ...] = ()):
    """Never clobber an earlier run silently: resume it, start over only when asked, or refuse, before any loading.

    The main process decides and every process follows it (one decision even without a shared file system); returns
    the ``resume_from_checkpoint`` value for ``Trainer.train``.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    outcome = [None]
    if state.is_main_process:
        try:
            outcome = [("ok", plan_output_dir(output_dir, resume_from_checkpoint, overwrite, inputs))]
        except ValueError as err:
            outcome = [("error", str(err))]
    if state.num_processes > 1:
        outcome = broadcast_object_list(outcome)
    kind, value = outcome[0]
    if kind == "error":
        raise ValueError(value)
    resume, message, delete = value
    if state.is_main_process:
        for name in delete:
            path = os.path.join(output_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    state.wait_for_everyone()
    if message:
        state.print(f"trl-decpo train: {message}", file=sys.stderr)
    return resume


def _missing_folders(path: str) -> list[str]:
    """The folders of ``path`` that do not exist yet, deepest first (``a/b/c`` where only ``a`` exists: ``a/b/c``,
    ``a/b``)."""
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


@contextlib.contextmanager
def removed_if_left_empty(*folders: str | None):
    """Run the block; when it fails, remove each of ``folders`` that did not exist before it and is an empty folder
    after it, with the parent folders created for it that are then empty too: a failed command leaves no empty output
    folder behind. A folder that existed before, or that holds anything, is never removed (``os.rmdir`` removes empty
    folders only, so a file written meanwhile, even by another process, keeps it)."""
    created = [path for folder in folders if folder for path in _missing_folders(folder)]
    try:
        yield
    except BaseException:
        for path in created:  # deepest first: a parent is empty once its new child is gone
            try:
                os.rmdir(path)
            except OSError:  # never created, not empty, not a folder, or already removed by another process
                pass
        raise
