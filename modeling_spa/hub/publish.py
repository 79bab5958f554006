"""Publishing a saved folder (a model, a dataset build) to the Hugging Face Hub, after everything is saved locally."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class HubPushError(RuntimeError):
    """The push failed; everything was saved locally first."""


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    message: str = "Upload SPA model",
    repo_type: str = "model",
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Upload `folder` to the `repo_type` repo `repo_id` (token from HF_TOKEN or the login cache); the commit URL.

    Any failure (offline, no token, no permission) is a `HubPushError` that says where the files are and how to
    push them later.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN"))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=message,
            repo_type=repo_type,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        )
    except Exception as err:  # offline, no token, no permission: all end the same way for the user
        kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
        raise HubPushError(
            f"Pushing to the Hub as {repo_id!r} failed ({type(err).__name__}: {err}). Everything is saved in "
            f"{folder}; push it later with `hf upload{kind} {repo_id} {folder}`."
        ) from err
    return getattr(commit, "commit_url", str(commit))
