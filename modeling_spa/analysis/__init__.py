"""Analyses of trained models and their label space: collapse diagnostics, label-text geometry, zero-shot tags,
the listening study's statistics, and the tables and figures that report them."""
