"""The example data set loads, and its bad files are refused exactly where they are bad."""

from __future__ import annotations

from tests.conftest import EXAMPLES, scalar

DATA = EXAMPLES / "data"


def test_example_data_set_loads_and_targets(examples_applied, cli):
    assert cli("parties", "import", DATA / "parties.csv", "-q").code == 0
    assert cli("contacts", "import", DATA / "contacts.csv", "-q").code == 0
    assert scalar("select count(distinct kind) from party") == 5
    assert scalar("select count(*) from party where name ~ '[éèêàçôûïë]'") > 20
    result = cli("targets", "import", "SALON-ERP-2026", DATA / "targets.xlsx", "-q")
    assert result.code == 0, result.err
    assert scalar("select count(*) from operation_target") == 179
    assert scalar("select count(*) from operation_target_contact") == 99


def test_example_bad_files_name_their_bad_rows(examples_applied, cli):
    cli("parties", "import", DATA / "parties.csv", "-q")
    cli("contacts", "import", DATA / "contacts.csv", "-q")
    targets = cli("targets", "import", "SALON-ERP-2026", DATA / "targets-bad.csv", "-q")
    assert targets.code == 1
    assert [line.removeprefix("error: ").split(":")[0] for line in targets.err.splitlines()[:6]] == [
        f"targets-bad.csv row {n}" for n in (4, 7, 9, 11, 13, 15)]
    parties = cli("parties", "import", DATA / "parties-bad.csv", "-q")
    assert parties.code == 1
    assert [line.removeprefix("error: ").split(":")[0] for line in parties.err.splitlines()[:5]] == [
        f"parties-bad.csv row {n}" for n in (4, 6, 8, 10, 12)]
    assert scalar("select count(*) from operation_target") == 0
    assert scalar("select count(*) from party") == 400
