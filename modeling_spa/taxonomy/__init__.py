"""Taxonomies: the label spaces SPA aligns to and OmAP measures on. A `Taxonomy` is data: nodes with parents, names and
descriptions, read from a JSON or CSV file (`read_taxonomy`) or a flat label list; the AudioSet ontology (its files,
graph, distances and label descriptions) is one of them."""

from .audioset import AudioSetOntology, OntologyNode, resolve, short_name
from .files import AUDIOSET, load_taxonomy, read_label_list, read_taxonomy
from .taxonomy import Taxonomy, TaxonomyNode, check_distinct_descriptions

__all__ = [
    "AUDIOSET",
    "AudioSetOntology",
    "OntologyNode",
    "Taxonomy",
    "TaxonomyNode",
    "check_distinct_descriptions",
    "load_taxonomy",
    "read_label_list",
    "read_taxonomy",
    "resolve",
    "short_name",
]
