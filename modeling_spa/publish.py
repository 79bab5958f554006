"""Publishing a saved model folder to the Hugging Face Hub, after everything is saved locally."""

from __future__ import annotations

import os
from pathlib import Path


class HubPushError(RuntimeError):
    """The push failed; everything was saved locally first."""


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, message: str = "Upload SPA model") -> str:
    """Upload `folder` to the model repo `repo_id` (token from HF_TOKEN or the login cache); the commit URL.

    Any failure (offline, no token, no permission) is a `HubPushError` that says where the files are and how to
    push them later.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN"))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    except Exception as err:  # offline, no token, no permission: all end the same way for the user
        raise HubPushError(
            f"Pushing to the Hub as {repo_id!r} failed ({type(err).__name__}: {err}). Everything is saved in "
            f"{folder}; push it later with `hf upload {repo_id} {folder}`."
        ) from err
    return getattr(commit, "commit_url", str(commit))
