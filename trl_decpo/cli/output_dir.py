# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The output folder: a training run never clobbers an earlier one silently (it resumes it, or is refused), and a
folder that a failed command created and left empty is removed again."""

from __future__ import annotations

import contextlib
import os


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def resume_point(output_dir: str, resume) -> tuple[str | None, str | None]:
    """The checkpoint to resume from (``resume_from_checkpoint``: ``true`` or ``last`` for the last one in
    ``output_dir``, or a path) and what to say about it; a ``ValueError`` for a used ``output_dir`` without it, or a
    checkpoint that cannot continue there. Reads the folder, changes nothing."""
    from transformers.trainer_utils import get_last_checkpoint

    existing = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if resume in (None, False, "", "false", "False"):
        if not existing:
            return None, None
        checkpoints = [name for name in existing if name.startswith("checkpoint-")]
        what = f"a run with checkpoints {checkpoints}" if checkpoints else f"files {existing[:5]}"
        todo = "Pass `--resume_from_checkpoint true` to continue it, or choose" if checkpoints else "Choose"
        raise ValueError(
            f"`output_dir` {output_dir!r} already holds {what}. {todo} an empty `--output_dir` (or delete that "
            "folder to start over there)."
        )
    if str(resume) in ("true", "True", "last"):
        resume = get_last_checkpoint(output_dir) if existing else None
        if resume is None:
            raise ValueError(
                f"`resume_from_checkpoint` asks for the last checkpoint in `output_dir` {output_dir!r}, which holds "
                "none (`checkpoint-<step>` folders); drop it to start a new run"
            )
    elif not os.path.isdir(resume):
        raise ValueError(f"`resume_from_checkpoint` {resume!r} is not a checkpoint folder")
    elif existing and not _inside(resume, output_dir):
        raise ValueError(
            f"`resume_from_checkpoint` {resume!r} lies outside `output_dir` {output_dir!r}, which already holds "
            f"{existing[:5]}: continuing there would mix two runs. Resume into an empty `--output_dir`, or into the "
            "folder the checkpoint belongs to."
        )
    note = (
        ""
        if os.path.isfile(os.path.join(resume, "optimizer.pt"))
        else " (it holds no optimizer state, e.g. `save_only_model`: the optimizer and scheduler restart, so the run "
        "will not match an uninterrupted one)"
    )
    return resume, f"resuming the run in {output_dir} from {os.path.basename(os.path.normpath(resume))}{note}"


def decided_on_the_main_process(output_dir: str, resume) -> tuple[str | None, str | None]:
    """:func:`resume_point`, decided by the main process and followed by every process (one decision even without a
    shared file system: a rank whose local folder differs neither refuses alone nor resumes something else)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    outcome = [None]
    if state.is_main_process:
        try:
            outcome = [("ok", resume_point(output_dir, resume))]
        except ValueError as err:
            outcome = [("error", str(err))]
    if state.num_processes > 1:
        outcome = broadcast_object_list(outcome)
    kind, value = outcome[0]
    if kind == "error":
        raise ValueError(value)
    return value


@contextlib.contextmanager
def removed_if_left_empty(*folders: str | None):
    """Run the block; when it fails, remove each of ``folders`` that did not exist before it and is empty after it,
    with the parent folders created for it that are then empty too. A folder that existed before, or that holds
    anything, stays (``os.rmdir`` removes empty folders only, so a file written meanwhile, even by another process,
    keeps it)."""
    created = []
    for folder in filter(None, folders):
        path = os.path.abspath(folder)
        while not os.path.lexists(path) and path != os.path.dirname(path):  # deepest first
            created.append(path)
            path = os.path.dirname(path)
    try:
        yield
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):  # never created, not empty, or removed by another process
                os.rmdir(path)
        raise
