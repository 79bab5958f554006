"""Gradio Space for the OmAP metric (the standard `evaluate` widget), loading the module beside this file."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load(str(Path(__file__).with_name("omap.py")))
launch_gradio_widget(module)
