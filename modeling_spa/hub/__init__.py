"""The Hub: model and dataset cards (templates in the project's `hub_cards/`) and publishing folders."""

from .cards import render_model_card
from .publish import HubPushError, push_to_hub

__all__ = ["HubPushError", "push_to_hub", "render_model_card"]
