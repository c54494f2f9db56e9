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
        ("word,size\ncat,2\ndog,inf\n", r"row 3, column 'size' holds 'inf', not a number"),
        ("word,size\ncat,2\n,3\n", r"row 3, column 'word' is empty"),
        ("word,size,weight\ncat,2,\ndog,3,na\n", r"column\(s\) 'weight' have no ratings"),
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


def test_missing_cells_of_a_norms_table_stay_unrated_for_that_attribute_only(tmp_path):
    table = tmp_path / "norms.csv"
    table.write_text("word,size,danger,speed\ncat,2,,3\ntruck,5,4,NA\nspoon,1,0.5,nan\nowl,3,2,1\n")
    r = load_ratings(table)
    assert r.attributes == ["size", "danger", "speed"] and np.isnan(r.values).sum() == 3
    assert np.isnan(r.values[0, 1]) and np.isnan(r.values[1, 2]) and r.values[3].tolist() == [3.0, 2.0, 1.0]
    assert r.complete.tolist() == [False, False, False, True]
    assert r.template == "{word}" and r.super_categories is None


def test_attributes_are_chosen_by_names_or_a_regex_and_unknown_names_are_refused(tmp_path, binder_csv):
    table = tmp_path / "norms.csv"
    table.write_text("word,size_a,size_b,danger\ncat,2,1,1\ndog,3,1,2\n")
    assert load_ratings(table, attributes="danger,size_a").attributes == ["size_a", "danger"]
    assert load_ratings(table, attributes="size_.*").attributes == ["size_a", "size_b"]
    with pytest.raises(SdvizError, match=r"no attribute column\(s\) 'height'"):
        load_ratings(table, attributes="size_a,height")
    with pytest.raises(SdvizError, match="matches no attribute column"):
        load_ratings(table, attributes="weight")
    with pytest.raises(SdvizError, match="nor a valid regular expression"):
        load_ratings(table, attributes="size_(")
    r = load_ratings(binder_csv, attributes="Vision,Color,Music")
    assert r.attributes == ["Vision", "Color", "Music"] and r.group_names == ["Vision", "Audition"]
    assert r.values.shape == (434, 3)


def test_selection_is_refused_for_generic_tables_and_templates_follow_the_word_class(tmp_path, binder_csv):
    table = tmp_path / "norms.csv"
    table.write_text("word,size\ncat,2\ndog,3\n")
    with pytest.raises(SdvizError, match="--selection picks a word class of Binder's table"):
        load_ratings(table, selection="nouns")
    nouns = tmp_path / "nouns.csv"
    nouns.write_text("word,word_class,super_category,size\napple,noun,food,2\ndog,noun,animal,3\n")
    r = load_ratings(nouns)
    assert r.attributes == ["size"] and r.template == "a photo of {a_word}" and r.super_categories == ["food", "animal"]
    assert load_ratings(binder_csv).template == "a photo of {a_word}"
    assert load_ratings(binder_csv, selection="verbs").template == "{word}"


def test_article_helper_and_template_checks():
    from sdviz.ratings import check_template, fill_template

    assert fill_template("a photo of {a_word}", "abbreviate") == "a photo of an abbreviate"
    assert [fill_template("{a_word}", w) for w in ("dog", "apple", "hour", "unicorn", "Umbrella")] == [
        "a dog", "an apple", "an hour", "a unicorn", "an Umbrella"]
    assert fill_template("{word}", "dog") == "dog"
    for bad, message in (("a photo of a {word} {x}", r"uses \{x\}"), ("a photo", "no {word} or {a_word}"),
                         ("a photo of {}", r"uses \{\}"), ("a {word", "not valid")):
        with pytest.raises(SdvizError, match=message):
            check_template(bad)


def test_binder_tables_with_duplicated_words_are_refused_like_any_table(tmp_path, binder_csv):
    lines = binder_csv.read_text().splitlines()
    nouns = [line for line in lines[1:] if line.split(",")[2] == "1"][:5]
    table = tmp_path / "dup.csv"
    table.write_text("\n".join([lines[0], *nouns, nouns[1]]) + "\n")
    with pytest.raises(SdvizError, match=r"row 7, column 'Word': duplicate word 'accordion' \(first at row 3\)"):
        load_ratings(table)
    r = load_ratings(binder_csv)
    assert len(r.super_categories) == 434 and set(r.super_categories) >= {"artifact", "living object", "event"}
    assert len(set(r.super_categories)) == 6


def test_table_size_limits_give_a_clear_message(tmp_path, monkeypatch):
    from sdviz import ratings

    table = tmp_path / "big.csv"
    table.write_text("word,size\n" + "".join(f"w{i},{i}\n" for i in range(30)))
    monkeypatch.setattr(ratings, "MAX_ROWS", 20)
    with pytest.raises(SdvizError, match="more than 20 rows.*at most 20 words"):
        load_ratings(table)
    monkeypatch.setattr(ratings, "MAX_ROWS", 100)
    monkeypatch.setattr(ratings, "MAX_COLUMNS", 1)
    with pytest.raises(SdvizError, match="at most 100 words and 1 columns"):
        load_ratings(table)
    monkeypatch.setattr(ratings, "MAX_COLUMNS", 10)
    table.write_text("word,size\n" + "x" * 300 + ",1\ndog,2\n")
    with pytest.raises(SdvizError, match="row 2, column 'word' holds more than 200 characters"):
        load_ratings(table)
