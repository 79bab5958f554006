"""Taxonomies as data: files read and validated (errors naming rows), label texts, hop distances, label matching, and
OmAP on a small custom hierarchy computed by hand, in the package and in the evaluate module without the package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest

from modeling_spa.metrics import compute_omap
from modeling_spa.metrics.evaluate_module import install_omap_metric
from modeling_spa.taxonomy import AudioSetOntology, Taxonomy, load_taxonomy, read_label_list, read_taxonomy

REPO = Path(__file__).resolve().parents[2]
# A small hierarchy: "Growl" has two parents, as AudioSet's Growling has four.
CSV = """id,name,parents,description
all,All sounds,,Everything.
animal,Animals,all,Sounds of animals.
dog,Dog,animal,A dog barking or growling.
cat,Cat,animal,
growl,Growl,dog;cat,A low rumbling threat.
machine,Machines,all,
engine,Engine,machine,A running motor.
"""


@pytest.fixture
def csv_taxonomy(tmp_path):
    path = tmp_path / "sounds.csv"
    path.write_text(CSV)
    return path


def test_csv_taxonomy_graph_texts_and_distances(csv_taxonomy):
    taxonomy = read_taxonomy(csv_taxonomy)
    assert taxonomy.title == "sounds" and taxonomy.source == "sounds.csv"
    assert taxonomy.label_ids == ["growl", "engine"]  # the leaves, in file order, by default
    assert taxonomy.nodes["growl"].parents == ("dog", "cat")
    assert taxonomy.nodes["animal"].children == ("dog", "cat")
    ids = ["dog", "cat", "growl", "engine"]
    # Hops on the undirected graph: dog-cat through Animals (2) or through their shared child Growl (2).
    assert taxonomy.distances_for(ids).tolist() == [[0, 2, 1, 4], [2, 0, 1, 4], [1, 1, 0, 5], [4, 4, 5, 0]]
    assert taxonomy.descriptions("direct", ids) == ["Dog", "Cat", "Growl", "Engine"]
    assert taxonomy.descriptions("prompt", ["dog"]) == ["the sound of Dog"]
    assert taxonomy.descriptions("desc", ["dog", "cat"]) == ["A dog barking or growling.", "Cat"]  # none: the name
    # The shortest upward path; a tie between parents goes to the one listed first (dog before cat).
    assert taxonomy.description("growl", "concat") == "All sounds > Animals > Dog > Growl"
    assert taxonomy.top_level("engine") == "all"


def test_json_forms_give_the_same_taxonomy(csv_taxonomy, tmp_path):
    csv_version = read_taxonomy(csv_taxonomy)
    nodes = [{"id": n.id, "name": n.name, "parents": list(n.parents), "description": n.description}
             for n in csv_version.nodes.values()]  # fmt: skip
    as_nodes = tmp_path / "nodes.json"
    as_nodes.write_text(json.dumps({"name": "My sounds", "nodes": nodes}))
    as_children = tmp_path / "children.json"  # AudioSet's form: child_ids instead of parents
    as_children.write_text(json.dumps([{"id": n.id, "name": n.name, "child_ids": list(n.children)}
                                       for n in csv_version.nodes.values()]))  # fmt: skip
    for path in (as_nodes, as_children):
        taxonomy = read_taxonomy(path)
        assert np.array_equal(taxonomy.node_distances, csv_version.node_distances)
        assert {k: v.parents for k, v in taxonomy.nodes.items()} == {k: v.parents for k, v in csv_version.nodes.items()}
    assert read_taxonomy(as_nodes).title == "My sounds"


def test_audioset_ontology_file_read_as_a_taxonomy_gives_the_ontologys_distances(ontology, shared_audioset):
    generic = read_taxonomy(shared_audioset / "ontology.json", classes=ontology.label_mids)
    assert np.array_equal(generic.distances, ontology.distances)  # one implementation: the same 0..21 matrix
    assert generic.descriptions("concat", ontology.label_mids[:50], name_style="full") == ontology.descriptions(
        "concat", ontology.label_mids[:50], name_style="full"
    )
    assert isinstance(ontology, Taxonomy) and ontology.label_ids == ontology.label_mids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,name,parents\na,A,\nb,B,a\nb,C,a\n", r"duplicate ids: row 3 \(id 'b'\) and row 4 \(id 'b'\)"),
        ("id,name,parents\na,A,\nb,Dog,a\nc,dog ,a\n", r"duplicate names.*row 3 \(id 'b'\) and row 4 \(id 'c'\)"),
        ("id,name,parents\na,A,\nb,B,a\nc,C,dgo\n", r"unknown parent.*row 4 \(id 'c'\): parent 'dgo'"),
        ("id,name,parents\nr,Root,\na,A,r;c\nb,B,a\nc,C,b\n", r"cycle, 'a' -> 'c' -> 'b' -> 'a'.*row 3 \(id 'a'\)"),
        ("id,name,parents\na,A,a\n", r"cycle, 'a' -> 'a'"),
        ("id,name,parents\nx,X,\ny,Y,x\np,P,\nq,Q,p\n", r"2 disconnected parts.*\{'x'\}.*row 2.*\{'p'\}.*row 4"),
        ("id,name\na,\n", r"row 2 has no 'name'"),
        ("name,parents\nA,\n", r"'id' and 'name'"),
    ],
)
def test_mistakes_are_errors_naming_the_rows(tmp_path, text, message):
    path = tmp_path / "taxonomy.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        read_taxonomy(path)
    assert "taxonomy.csv" in str(error.value)


def test_json_mistakes_name_the_node(tmp_path):
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps([{"id": "a", "name": "A"}, {"id": "b", "name": "B", "parents": ["zz"]}]))
    with pytest.raises(ValueError, match=r"node #1 \(id 'b'\): parent 'zz'"):
        read_taxonomy(path)
    path.write_text(json.dumps([{"id": "a", "name": "A", "child_ids": ["missing"]}]))
    with pytest.raises(ValueError, match=r"node #0 \(id 'a'\): child 'missing'"):
        read_taxonomy(path)


def test_labels_match_by_id_or_name_and_unknown_ones_are_listed_with_close_names(csv_taxonomy):
    taxonomy = read_taxonomy(csv_taxonomy)
    assert taxonomy.ids_of(["dog", "Cat", " growl ", "ENGINE"]) == ["dog", "cat", "growl", "engine"]
    with pytest.raises(ValueError, match=r"2 label\(s\).*'Dgo' \(closest known: 'Dog'\); 'Enjine' \(closest known: "
                                         r"'Engine'\)"):  # fmt: skip
        taxonomy.ids_of(["Dgo", "cat", "Enjine", "Dgo"])
    assert read_taxonomy(csv_taxonomy, classes=["Engine", "dog"]).label_ids == ["engine", "dog"]


def test_a_flat_label_list_has_texts_but_no_distances(tmp_path):
    flat = Taxonomy.flat(["siren", "dog bark"])
    assert not flat.has_hierarchy and flat.descriptions("prompt") == ["the sound of siren", "the sound of dog bark"]
    with pytest.raises(ValueError, match="need.*a hierarchy.*flat label list"):
        flat.distances  # noqa: B018
    path = tmp_path / "flat.csv"
    path.write_text("id,name\na,A\nb,B\n")  # a file without parents: flat, not "disconnected"
    assert not read_taxonomy(path).has_hierarchy
    with pytest.raises(ValueError, match="OmAP need.*a hierarchy"):
        compute_omap([[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], taxonomy=read_taxonomy(path))


def test_label_lists_and_named_taxonomies(tmp_path, ontology):
    (tmp_path / "classes.txt").write_text("Dog\n\ncat\n")
    assert read_label_list(tmp_path / "classes.txt") == ["Dog", "cat"]
    (tmp_path / "classes.json").write_text(json.dumps({"mids": ["/m/09x0r"]}))
    assert read_label_list(tmp_path / "classes.json") == ["/m/09x0r"]
    assert load_taxonomy("audioset") is ontology
    assert load_taxonomy(None, ["Speech", "/m/05zppz"]).label_ids == ["/m/09x0r", "/m/05zppz"]
    assert isinstance(ontology.with_labels(["Speech"]), AudioSetOntology)


# -- OmAP on a small custom hierarchy, by hand ----------------------------------------------------------------------
# all -> animal -> {dog, cat}; all -> engine. Classes (dog, cat, engine): D = [[0, 2, 3], [2, 0, 3], [3, 3, 0]],
# Dmax = 3, levels 0..3. Off-diagonal D sums to 16 over 6 entries.
#   λ = 0, 1: nothing within λ; m = 16/6 = 8/3, so a false positive at distance 2 weighs 3/4, at 3 weighs 9/8.
#   λ = 2: distance 2 is free; m = 12/6 = 2, distance 3 weighs 3/2.   λ = 3: every weight 0, every AP 1.
# Clips: A (dog) scores (.9, .8, .1); B (cat) (.7, .6, .55); C (engine) (.3, .4, .5).
#   dog: A ranks first: AP 1 at every level, plain 1.
#   cat: A (nearest label dog, distance 2) above B: AP 1/(1 + 3/4) = 4/7 at λ 0, 1; 1 at λ 2, 3; plain 1/2.
#   engine: B (nearest label cat, distance 3) above C: 1/(1 + 9/8) = 8/17 at λ 0, 1; 1/(1 + 3/2) = 2/5 at λ 2;
#           1 at λ 3; plain 1/2.
TREE = {"all": ["animal", "engine"], "animal": ["dog", "cat"], "dog": [], "cat": [], "engine": []}
REFERENCES = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
PREDICTIONS = [[0.9, 0.8, 0.1], [0.7, 0.6, 0.55], [0.3, 0.4, 0.5]]
OMAP_PER_LAMBDA = [(1 + 4 / 7 + 8 / 17) / 3] * 2 + [(1 + 1 + 2 / 5) / 3, 1.0]


def check_hand_computed(result):
    assert result["map"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(result["omap_per_lambda"], OMAP_PER_LAMBDA, rtol=1e-12)
    assert result["omap"] == pytest.approx(sum(OMAP_PER_LAMBDA) / 4)


def test_omap_on_a_small_custom_hierarchy_by_hand(tmp_path):
    path = tmp_path / "tree.csv"
    path.write_text("id,name,parents\nall,All,\nanimal,Animal,all\ndog,Dog,animal\ncat,Cat,animal\nengine,Engine,all\n")
    taxonomy = read_taxonomy(path, classes=["dog", "cat", "engine"])
    check_hand_computed(compute_omap(REFERENCES, PREDICTIONS, taxonomy=taxonomy))
    check_hand_computed(compute_omap(REFERENCES, PREDICTIONS, taxonomy=TREE))  # the leaves: dog, cat, engine
    metric = evaluate.load(str(REPO / "metrics" / "omap"))
    check_hand_computed(metric.compute(predictions=PREDICTIONS, references=REFERENCES, taxonomy=str(path),
                                       classes=["Dog", "Cat", "Engine"]))  # fmt: skip
    check_hand_computed(metric.compute(predictions=PREDICTIONS, references=REFERENCES, taxonomy=TREE))
    with pytest.raises(ValueError, match="3 classes.*but `classes` names 2"):
        metric.compute(predictions=PREDICTIONS, references=REFERENCES, taxonomy=TREE, classes=["dog", "cat"])
    with pytest.raises(ValueError, match="not both"):
        metric.compute(predictions=PREDICTIONS, references=REFERENCES, taxonomy=TREE, distances=[[0]])


# evaluate alone, the package blocked: the module reads the taxonomy itself.
WITHOUT_PACKAGE = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_spa" or name.startswith("modeling_spa."):
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, Block())
import evaluate
args = json.loads(open(sys.argv[1]).read())
metric = evaluate.load("spa-audio-tagging/omap")
out = {"file": metric.compute(predictions=args["p"], references=args["r"], taxonomy=args["file"],
                              classes=["dog", "cat", "engine"])}
try:
    metric.compute(predictions=args["p"], references=args["r"], taxonomy=args["bad"])
except ValueError as err:
    out["error"] = str(err)
print(json.dumps(out))
"""


def test_evaluate_module_computes_omap_on_a_taxonomy_file_without_the_package(tmp_path):
    modules = tmp_path / "modules"
    install_omap_metric(hf_modules_cache=modules, bare_alias=False)
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"name": "tree", "nodes": [{"id": k, "name": k.title(), "parents": [p for p, kids in
                    TREE.items() if k in kids]} for k in TREE]}))  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,parents\na,A,b\nb,B,a\n")
    (tmp_path / "args.json").write_text(json.dumps({"p": PREDICTIONS, "r": REFERENCES, "file": str(tree),
                                                    "bad": str(bad)}))  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment |= {"HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, str(tmp_path / "args.json")], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    check_hand_computed(out["file"])
    assert "cycle" in out["error"] and "row 2 (id 'a')" in out["error"]
