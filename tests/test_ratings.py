import numpy as np
import pytest

from sdviz import SdvizError
from sdviz.ratings import BINDER_ATTRIBUTES, BINDER_DOMAINS, fetch_binder, load_ratings


def test_binder_nouns_are_434_words_by_65_attributes_in_14_domains(binder_csv):
    r = load_ratings(binder_csv)
    assert len(r.words) == 434 and r.values.shape == (434, 65)
    assert r.attributes == BINDER_ATTRIBUTES and len(r.group_names) == 14 == len(BINDER_DOMAINS)
    assert r.groups["Loud"] == "Audition" and r.groups["Pleasant"] == "Emotion"
    assert np.isfinite(r.values).all() and r.values.min() >= 0 and r.values.max() <= 6
    assert r.words[:2] == ["accident", "accordion"]
    assert r.values[1, r.attributes.index("Music")] == pytest.approx(5.931034)
    assert len(set(r.categories)) == 26
    assert r.find_word_in("A photo of a dog.") == "dog" and r.lookup("DOG") is not None and r.find_word_in("a hammer") is None


def test_binder_all_words_drops_unrated_attributes_and_keeps_both_used(binder_csv):
    r = load_ratings(binder_csv, selection="all")
    assert len(r.words) == 535 and len(set(r.words)) == 535
    assert "used (verb)" in r.words and "used (adjective)" in r.words
    assert {"Complexity", "Practice", "Caused"}.isdisjoint(r.attributes) and len(r.attributes) == 62
    verbs = load_ratings(binder_csv, selection="verbs")
    assert len(verbs.words) == 62 and "Complexity" not in verbs.attributes


def test_any_norms_table_loads_with_groups(tmp_path):
    table = tmp_path / "norms.csv"
    table.write_text("word,category,size,danger\ncat,animal,2,1\ntruck,vehicle,5,4\nspoon,tool,1,0.5\n")
    groups = tmp_path / "groups.json"
    groups.write_text('{"physical": ["size"], "affect": ["danger"]}')
    r = load_ratings(table, groups_json=groups)
    assert r.words == ["cat", "truck", "spoon"] and r.attributes == ["size", "danger"]
    assert r.groups == {"size": "physical", "danger": "affect"} and r.categories == ["animal", "vehicle", "tool"]
    assert r.values[1].tolist() == [5.0, 4.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,size\ncat,2\n", "no 'word' column"),
        ("word,size\ncat,2\ndog,big\n", r"row 3, column 'size' holds 'big', not a number"),
        ("word,size\ncat,2\ndog,\n", r"row 3, column 'size' is empty"),
        ("word,size\ncat,2\ndog,nan\n", r"row 3, column 'size'"),
        ("word,size\ncat,2\nCat,3\n", r"row 3, column 'word': duplicate word 'Cat' \(first at row 2\)"),
        ("word,size\n", "no rows"),
    ],
)
def test_bad_tables_name_the_file_row_and_column(tmp_path, text, message):
    table = tmp_path / "bad.csv"
    table.write_text(text)
    with pytest.raises(SdvizError, match=message) as err:
        load_ratings(table)
    assert str(table) in str(err.value)


def test_missing_file_and_empty_selection_are_actionable(tmp_path, binder_csv, monkeypatch):
    with pytest.raises(SdvizError, match="data fetch binder"):
        load_ratings(tmp_path / "nope.csv")
    monkeypatch.delenv("SDVIZ_RATINGS", raising=False)
    monkeypatch.setenv("SDVIZ_CACHE", str(tmp_path))
    with pytest.raises(SdvizError, match="No ratings file given"):
        load_ratings(None)
    with pytest.raises(SdvizError, match="Unknown selection"):
        load_ratings(binder_csv, selection="pronouns")


def test_fetch_verifies_the_checksum_and_never_leaves_a_partial_file(tmp_path):
    source = tmp_path / "mirror.xlsx"
    source.write_bytes(b"not the real file")
    dest = tmp_path / "out" / "binder.xlsx"
    with pytest.raises(SdvizError, match="sha256"):
        fetch_binder(dest, url=source.as_uri())
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    import hashlib

    good = fetch_binder(dest, url=source.as_uri(), sha256=hashlib.sha256(b"not the real file").hexdigest())
    assert good == dest and dest.read_bytes() == b"not the real file"
    with pytest.raises(SdvizError, match="Could not download"):
        fetch_binder(tmp_path / "other.xlsx", url=(tmp_path / "missing.xlsx").as_uri())
    assert not (tmp_path / "other.xlsx").exists()
