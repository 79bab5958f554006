"""Tagging: files to scores with a trained model (`files`)."""

from .files import file_outputs, file_scores, file_windows, tag_file, text_cosines

__all__ = ["file_outputs", "file_scores", "file_windows", "tag_file", "text_cosines"]
