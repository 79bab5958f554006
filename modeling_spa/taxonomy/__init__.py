"""Taxonomies: the label spaces SPA aligns to and OmAP measures on. The AudioSet ontology (its files, graph,
distances and label descriptions)."""

from .audioset import AudioSetOntology, OntologyNode, check_distinct_descriptions, resolve, short_name

__all__ = ["AudioSetOntology", "OntologyNode", "check_distinct_descriptions", "resolve", "short_name"]
