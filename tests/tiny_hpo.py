"""A hand-sized HPO release (hp.obo + phenotype.hpoa) for tests whose numbers are checked by hand.

    All (HP:0000001)
    ├── Phenotypic abnormality (HP:0000118)
    │   ├── Abnormality of A (HP:0001000)
    │   │   ├── A1 (HP:0001001, alt id HP:0001099)
    │   │   │   └── A1a (HP:0001003)
    │   │   └── A2 (HP:0001002)
    │   └── B (HP:0002000)          (obsolete HP:0009999 is replaced by it)
    └── Onset (HP:0003674)
        ├── Congenital onset (HP:0003577)
        └── Adult onset (HP:0003581)

    OMIM:1  A1 1/2 (PMID:1), A1 3/4 (PMID:2), B Occasional (OMIM:1); congenital onset (PMID:1)
    OMIM:2  B (no frequency, PMID:3), A2 50% (PMID:3), A1a 1/1 MALE only (PMID:4)
    OMIM:3  inheritance only (no phenotype annotation)
    ORPHA:5 A2 (not loaded unless asked for)
"""

from __future__ import annotations

from pathlib import Path

OBO = """format-version: 1.2
data-version: hp/releases/2099-01-01

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0001000
name: Abnormality of A
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001001
name: A1
alt_id: HP:0001099
synonym: "A one" EXACT []
synonym: "A-ish" RELATED []
is_a: HP:0001000 ! Abnormality of A

[Term]
id: HP:0001003
name: A1a
is_a: HP:0001001 ! A1

[Term]
id: HP:0001002
name: A2
is_a: HP:0001000 ! Abnormality of A

[Term]
id: HP:0002000
name: B
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0009999
name: obsolete B
is_obsolete: true
replaced_by: HP:0002000

[Term]
id: HP:0003674
name: Onset
is_a: HP:0000001 ! All

[Term]
id: HP:0003577
name: Congenital onset
is_a: HP:0003674 ! Onset

[Term]
id: HP:0003581
name: Adult onset
is_a: HP:0003674 ! Onset

[Typedef]
id: part_of
name: part of
"""

HPOA_ROWS = [
    # database_id, disease_name, qualifier, hpo_id, reference, evidence, onset, frequency, sex,
    # modifier, aspect
    ("OMIM:1", "Disease one", "", "HP:0001001", "PMID:1", "PCS", "", "1/2", "", "", "P"),
    ("OMIM:1", "Disease one", "", "HP:0001099", "PMID:2", "PCS", "", "3/4", "", "", "P"),
    ("OMIM:1", "Disease one", "", "HP:0002000", "OMIM:1", "TAS", "", "HP:0040283", "", "", "P"),
    ("OMIM:1", "Disease one", "", "HP:0003577", "PMID:1", "PCS", "", "", "", "", "C"),
    ("OMIM:2", "Disease two", "", "HP:0009999", "PMID:3", "PCS", "", "", "", "", "P"),
    ("OMIM:2", "Disease two", "", "HP:0001002", "PMID:3", "PCS", "", "50%", "", "", "P"),
    ("OMIM:2", "Disease two", "", "HP:0001003", "PMID:4;PMID:5", "PCS", "", "1/1", "MALE", "", "P"),
    ("OMIM:3", "Disease three", "", "HP:0003581", "OMIM:3", "TAS", "", "", "", "", "I"),
    ("ORPHA:5", "Orpha disease", "", "HP:0001002", "ORPHA:5", "TAS", "", "", "", "", "P"),
]


def write_tiny_hpo(folder: Path) -> Path:
    """Write hp.obo and phenotype.hpoa into `folder`; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hp.obo").write_text(OBO, encoding="utf-8")
    header = ("#description: tiny test release\n#version: 2099-01-01\n"
              "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\t"
              "modifier\taspect\tbiocuration\n")
    body = "".join("\t".join(r) + "\tHPO:test[2099-01-01]\n" for r in HPOA_ROWS)
    (folder / "phenotype.hpoa").write_text(header + body, encoding="utf-8")
    return folder
