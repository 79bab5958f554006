import json
import urllib.request

import numpy as np
import pytest

from modeling_spa.label_text import DESCRIPTION_STYLES
from modeling_spa.taxonomy import (
    AudioSetOntology,
    OntologyNode,
    check_distinct_descriptions,
    short_name,
)
from modeling_spa.taxonomy import audioset as ontology_files


def test_counts_match_the_real_files(ontology):
    assert len(ontology.nodes) == 632
    assert len(ontology.label_mids) == 527
    assert sum(len(node.children) for node in ontology.nodes.values()) == 670
    assert len(ontology.top_level_mids) == 7
    assert sum(len(node.parents) > 1 for node in ontology.nodes.values()) == 38
    assert ontology.label_mids[0] == "/m/09x0r" and ontology.label_names[0] == "Speech"


def test_distance_matrix_shape_and_range(ontology):
    d = ontology.distances
    assert d.shape == (527, 527)
    assert np.array_equal(d, d.T)
    assert (np.diag(d) == 0).all()
    off = d[~np.eye(527, dtype=bool)]
    assert off.min() == 1 and d.max() == 21


@pytest.mark.parametrize(
    ("a", "b", "hops"),
    [
        ("Speech", "Male speech, man speaking", 1),  # parent - child
        ("Male speech, man speaking", "Female speech, woman speaking", 2),  # siblings
        ("Dog", "Growling", 1),  # Growling has four parents
        ("Cat", "Growling", 1),
        ("Dog", "Cat", 2),  # through their shared child Growling
        ("Thunder", "Field recording", 21),  # the farthest pair
    ],
)
def test_hand_checked_distances(ontology, mid_of, a, b, hops):
    i, j = ontology.label_mids.index(mid_of[a]), ontology.label_mids.index(mid_of[b])
    assert ontology.distances[i, j] == hops


def test_subset_is_the_full_graph_submatrix(ontology):
    mids = ontology.label_mids[100:130][::-1]
    index = [ontology.label_mids.index(m) for m in mids]
    assert np.array_equal(ontology.distances_for(mids), ontology.distances[np.ix_(index, index)])


def test_descriptions_of_male_speech(ontology, mid_of):
    mid = mid_of["Male speech, man speaking"]
    assert ontology.description(mid, "direct") == "Male speech"
    assert ontology.description(mid, "prompt") == "the sound of Male speech"
    assert (
        ontology.description(mid, "prompt", prompt_template="a recording of {label}.") == "a recording of Male speech."
    )
    assert ontology.description(mid, "desc") == "Speech uttered by an adult male human."
    assert ontology.description(mid, "concat") == "Human sounds > Human voice > Speech > Male speech"
    assert ontology.description(mid, "direct", name_style="full") == "Male speech, man speaking"


def test_concat_tie_break_takes_the_first_listed_parent(ontology, mid_of):
    # Growling: Dog, Cat, Roaring cats and Canidae are all parents; Dog comes first in ontology.json.
    assert ontology.description(mid_of["Growling"], "concat") == "Animal > Domestic animals > Dog > Growling"
    assert ontology.top_level(mid_of["Growling"]) == ontology.path_to_top(mid_of["Growling"])[0]


def test_every_label_has_a_description_in_every_style(ontology):
    for style in DESCRIPTION_STYLES:
        texts = ontology.descriptions(style)
        assert len(texts) == 527 and all(t.strip() for t in texts), style


def test_top_level_categories(ontology):
    tops = {ontology.top_level(mid) for mid in ontology.label_mids}
    assert tops <= set(ontology.top_level_mids) and len(tops) == 7


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("Male speech, man speaking", "Male speech"),
        ("Roaring cats (lions, tigers)", "Roaring cats (lions, tigers)"),  # commas in parentheses do not split
        ("Fire engine, fire truck (siren)", "Fire engine (siren)"),  # the qualifier of the whole name is kept
        ("Hubbub, speech noise, speech babble", "Hubbub"),
        ("Canidae, dogs, wolves", "Canidae"),
        ("Boat, Water vehicle", "Boat"),
        ("Bee, wasp, etc.", "Bee, wasp, etc."),  # lists of several things stay whole
        ("Dishes, pots, and pans", "Dishes, pots, and pans"),
        ("Channel, environment and background", "Channel, environment and background"),
        ("Speech", "Speech"),
    ],
)
def test_short_name(name, short):
    assert short_name(name) == short


def test_a_shared_first_alias_keeps_the_qualifier():
    assert short_name("Inside, small room") == "Inside"  # alone, the function cannot know "Inside" is shared
    assert short_name("Inside, small room", {"inside"}) == "Inside, small room"
    assert short_name("INSIDE, small room", ["Inside"]) == "INSIDE, small room"


def test_ontology_short_names(ontology, mid_of):
    assert ontology.shared_first_aliases == {"inside", "outside"}
    changed = {n: ontology.name(mid_of[n]) for n in mid_of if ontology.name(mid_of[n]) != n}
    assert len(changed) == 67  # of the 75 label names with a comma outside parentheses
    assert changed["Male speech, man speaking"] == "Male speech" and changed["Cattle, bovinae"] == "Cattle"
    kept = {n for n in mid_of if "," in n.split("(")[0]} - set(changed)
    assert kept == {
        "Inside, small room",
        "Inside, large room or hall",
        "Inside, public space",
        "Outside, urban or manmade",
        "Outside, rural or natural",
        "Dishes, pots, and pans",
        "Bee, wasp, etc.",
    }


@pytest.mark.parametrize(
    "name",
    [
        "Inside, small room",
        "Inside, large room or hall",
        "Inside, public space",
        "Outside, urban or manmade",
        "Outside, rural or natural",
    ],
)
def test_inside_and_outside_keep_their_qualifier(ontology, mid_of, name):
    mid = mid_of[name]
    assert ontology.description(mid, "direct") == name
    assert ontology.description(mid, "prompt") == f"the sound of {name}"
    assert ontology.description(mid, "concat") == f"Channel, environment and background > Acoustic environment > {name}"


@pytest.mark.parametrize("name_style", ["short", "full"])
@pytest.mark.parametrize("style", DESCRIPTION_STYLES)
def test_every_label_gets_its_own_description(ontology, style, name_style):
    texts = ontology.descriptions(style, name_style=name_style)
    assert len({" ".join(t.casefold().split()) for t in texts}) == len(ontology.label_mids) == 527
    check_distinct_descriptions(texts, ontology.label_names)


def test_shared_descriptions_are_refused_with_the_classes_named():
    with pytest.raises(ValueError, match=r"'inside' for 'Inside, small room' / 'Inside, public space'.*name_style"):
        check_distinct_descriptions(
            ["Inside", "Speech", "inside "], ["Inside, small room", "Speech", "Inside, public space"]
        )
    check_distinct_descriptions(["Inside, small room", "Inside, public space"], ["a", "b"])


def test_a_shared_first_alias_in_a_small_ontology():
    def node(mid, name):
        return OntologyNode(mid, name, "", (), (), ())

    nodes = {"/m/a": node("/m/a", "Bell"), "/m/b": node("/m/b", "Bell, church"), "/m/c": node("/m/c", "Horn, hooter")}
    small = AudioSetOntology(nodes, list(nodes), [n.name for n in nodes.values()])
    assert small.shared_first_aliases == {"bell"}
    assert small.descriptions("direct") == ["Bell", "Bell, church", "Horn"]


def test_bad_input_is_named(ontology):
    with pytest.raises(ValueError, match="/m/nope"):
        ontology.description("/m/nope")
    with pytest.raises(ValueError, match="haiku"):
        ontology.descriptions("haiku")
    with pytest.raises(ValueError, match="/m/nope"):
        ontology.distances_for(["/m/09x0r", "/m/nope"])


def test_malformed_files_are_named(tmp_path, ontology):
    labels = ontology_files.resolve(ontology_files.CLASS_LABELS_FILE)
    broken = tmp_path / "broken.json"
    broken.write_text("[{'id': ")
    with pytest.raises(ValueError, match="broken.json"):
        AudioSetOntology.from_files(broken, labels)
    dangling = tmp_path / "dangling.json"
    dangling.write_text(json.dumps([{"id": "/m/a", "name": "A", "child_ids": ["/m/zz"]}]))
    with pytest.raises(ValueError, match="/m/zz"):
        AudioSetOntology.from_files(dangling, labels)
    bad_csv = tmp_path / "labels.csv"
    bad_csv.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/unknown,"Nothing"\n')
    with pytest.raises(ValueError, match="/m/unknown"):
        AudioSetOntology.from_files(ontology_files.resolve(ontology_files.ONTOLOGY_FILE), bad_csv)
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("id,name\n0,Speech\n")
    with pytest.raises(ValueError, match="header"):
        AudioSetOntology.from_files(ontology_files.resolve(ontology_files.ONTOLOGY_FILE), bad_header)


# -- where the files come from ----------------------------------------------------------------------------


@pytest.fixture
def no_files(monkeypatch, tmp_path):
    """Nothing in the environment and an empty cache."""
    monkeypatch.delenv("SPA_ONTOLOGY", raising=False)
    monkeypatch.delenv("SPA_CLASS_LABELS", raising=False)
    monkeypatch.setenv("SPA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_explicit_path_wins_over_the_environment(monkeypatch, tmp_path):
    real = ontology_files.resolve(ontology_files.ONTOLOGY_FILE)
    monkeypatch.setenv("SPA_ONTOLOGY", str(tmp_path / "missing.json"))
    assert ontology_files.resolve(ontology_files.ONTOLOGY_FILE, real) == real
    with pytest.raises(FileNotFoundError, match="SPA_ONTOLOGY"):
        ontology_files.resolve(ontology_files.ONTOLOGY_FILE)


def test_offline_without_files_says_how_to_provide_them(no_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as raised:
        ontology_files.resolve(ontology_files.ONTOLOGY_FILE)
    message = str(raised.value)  # the three ways: the variable, the cache's path, the pinned URL
    assert "$SPA_ONTOLOGY" in message and str(no_files / "ontology.json") in message
    assert ontology_files.ONTOLOGY_FILE.url in message and "downloads are off" in message


class _FakeResponse:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, size: int = -1):
        chunk, self.data = (self.data, b"") if size < 0 else (self.data[:size], self.data[size:])
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_is_verified_and_cached(no_files, monkeypatch, shared_audioset):
    served = {
        ontology_files.ONTOLOGY_FILE.url: (shared_audioset / "ontology.json").read_bytes(),
        ontology_files.CLASS_LABELS_FILE.url: (shared_audioset / "class_labels_indices.csv").read_bytes(),
    }
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return _FakeResponse(served[url])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = ontology_files.resolve(ontology_files.ONTOLOGY_FILE)
    assert path == no_files / "ontology.json" and path.read_bytes() == served[ontology_files.ONTOLOGY_FILE.url]
    assert ontology_files.resolve(ontology_files.ONTOLOGY_FILE) == path and len(requested) == 1  # cached now


def test_download_with_wrong_hash_is_refused(no_files, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"[]"))
    with pytest.raises(ValueError, match="sha256"):
        ontology_files.resolve(ontology_files.CLASS_LABELS_FILE)
    assert not (no_files / "class_labels_indices.csv").exists()


def test_download_failure_is_explained(no_files, monkeypatch):
    def refuse(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(FileNotFoundError, match="network unreachable"):
        ontology_files.resolve(ontology_files.ONTOLOGY_FILE)
