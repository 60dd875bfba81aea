"""Streaming reading of user spreadsheets (campflow.render.sheets)."""

from __future__ import annotations

import csv
import tempfile
import tracemalloc
import zipfile
from datetime import date, datetime, time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from campflow.errors import ImportRejected
from campflow.render.sheet_files import open_sheet
from campflow.render.sheets import EXTRA, Column, fold_header

ALIASES = {
    "kind": ["FICHE", "KIND"],
    "code": ["TIERS", "CODE"],
    "contact": ["CONTACT"],
    "name": ["NOM", "NAME"],
    "first_name": ["PRENOM", "FIRST_NAME"],
    "postal_code": ["CP", "POSTAL_CODE"],
}
REQUIRED = ["kind", "code"]


def write_xlsx(path: Path, rows: list[list[object]], title: str = "Sheet") -> Path:
    """Write rows from A1 down; an empty list leaves a blank row."""
    workbook = Workbook()
    worksheet = workbook.active
    worksheet.title = title
    for number, row in enumerate(rows, start=1):
        for column, value in enumerate(row, start=1):
            if value is not None:
                worksheet.cell(row=number, column=column, value=value)
    workbook.save(path)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read(path: Path, **options: object) -> list[tuple[int, dict[str, str | None]]]:
    options = {"aliases": ALIASES, "required": REQUIRED, **options}
    with open_sheet(path, **options) as sheet:
        return list(sheet.rows())


def rejection(path: Path, **options: object) -> str:
    """The single problem of the ImportRejected raised while reading the file."""
    with pytest.raises(ImportRejected) as caught:
        read(path, **options)
    assert caught.value.summary == "nothing was imported"
    [problem] = caught.value.problems
    return str(problem)


class TestHeaderRow:
    def test_xlsx_header_on_row_3_after_a_title(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "targets.xlsx", [
            ["Liste des cibles"], ["exportée le 3 mars"], ["FICHE", "TIERS", "CONTACT"],
            ["CLI", "C001", None], ["PRO", "P002", "K1"],
        ])
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.header_row == 3
            assert sheet.columns == (Column(0, "FICHE", "kind"), Column(1, "TIERS", "code"),
                                     Column(2, "CONTACT", "contact"))
            assert (sheet.encoding, sheet.delimiter) == (None, None)
            assert list(sheet.rows()) == [
                (4, {"kind": "CLI", "code": "C001", "contact": None}),
                (5, {"kind": "PRO", "code": "P002", "contact": "K1"}),
            ]

    def test_csv_header_on_row_3_after_a_title(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "targets.csv",
                           b"Liste des cibles\nexport du 3 mars;;\nFICHE;TIERS\nCLI;C001\n")
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.header_row == 3
            assert list(sheet.rows()) == [(4, {"kind": "CLI", "code": "C001"})]

    def test_the_first_row_with_all_required_columns_wins(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [
            ["FICHE", "remarque"], ["FICHE", "TIERS"], ["CLI", "C1"],
        ])
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.header_row == 2

    def test_the_header_must_be_within_the_scanned_rows(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"titre\n\n\nFICHE;TIERS\nCLI;C1\n")
        assert rejection(path, max_header_scan=3) == (
            "t.csv: no header row with the columns FICHE and TIERS in the first 3 rows "
            "(row 1 has: titre); add them")
        assert read(path, max_header_scan=4) == [(5, {"kind": "CLI", "code": "C1"})]


class TestDelimiters:
    @pytest.mark.parametrize("delimiter", [";", "\t", ","])
    def test_each_delimiter_is_detected(self, tmp_path: Path, delimiter: str) -> None:
        path = tmp_path / "t.csv"
        with path.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file, delimiter=delimiter)
            writer.writerows([["FICHE", "TIERS", "NOM"], ["CLI", "C1", "Dupont, Jean; fils"]])
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.delimiter == delimiter
            assert list(sheet.rows()) == [
                (2, {"kind": "CLI", "code": "C1", "name": "Dupont, Jean; fils"})]

    def test_quoted_delimiters_in_the_header_do_not_count(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b'FICHE,TIERS,"NOTE; A; B"\nCLI,C1,x\n')
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.delimiter == ","
            assert [c.key for c in sheet.columns] == ["kind", "code", "NOTE; A; B"]

    def test_a_title_with_commas_does_not_fool_detection(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"Clients, prospects, fournisseurs\n"
                                               b"FICHE;TIERS\nCLI;C1\n")
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert (sheet.delimiter, sheet.header_row) == (";", 2)

    def test_tsv_and_txt_files_are_read_as_csv(self, tmp_path: Path) -> None:
        for name in ("t.tsv", "t.TXT"):
            path = write_bytes(tmp_path / name, b"FICHE\tTIERS\r\nCLI\tC1\r\n")
            assert read(path) == [(2, {"kind": "CLI", "code": "C1"})]


class TestEncodings:
    def test_utf8_with_bom(self, tmp_path: Path) -> None:
        text = "FICHE;TIERS;NOM\nCLI;C1;Émile Zoé\n"
        path = write_bytes(tmp_path / "t.csv", text.encode("utf-8-sig"))
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.encoding == "utf-8-sig"
            assert sheet.columns[0].header == "FICHE"
            assert list(sheet.rows()) == [(2, {"kind": "CLI", "code": "C1", "name": "Émile Zoé"})]

    def test_utf8_without_bom(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", "FICHE;TIERS;NOM\nCLI;C1;Zoé\n".encode())
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.encoding == "utf-8"
            assert [row["name"] for _, row in sheet.rows()] == ["Zoé"]

    def test_windows_1252_accents(self, tmp_path: Path) -> None:
        text = "FICHE;TIERS;NOM;PRÉNOM\nCLI;C1;Cœur à l'été;5 €\n"
        path = write_bytes(tmp_path / "t.csv", text.encode("cp1252"))
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.encoding == "cp1252"
            assert list(sheet.rows()) == [(2, {
                "kind": "CLI", "code": "C1", "name": "Cœur à l'été", "first_name": "5 €"})]

    def test_a_late_windows_1252_byte_decides_for_the_whole_file(self, tmp_path: Path) -> None:
        # The only non-UTF-8 byte sits far past the first chunk of the decoding pass.
        lines = [b"FICHE;TIERS;NOM"] + [b"CLI;C%d;Dupont" % i for i in range(20_000)]
        path = write_bytes(tmp_path / "t.csv", b"\n".join(lines + ["CLI;Z;Noël".encode("cp1252")]))
        rows = read(path)
        assert rows[-1] == (20_002, {"kind": "CLI", "code": "Z", "name": "Noël"})

    def test_utf8_characters_split_between_chunks(self, tmp_path: Path) -> None:
        # "é" is two bytes; some of them straddle the 8 KiB and 64 KiB read boundaries.
        body = "\n".join(f"CLI;C{i};é{'é' * (i % 7)}" for i in range(30_000))
        path = write_bytes(tmp_path / "t.csv", f"FICHE;TIERS;NOM\n{body}\n".encode())
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert sheet.encoding == "utf-8"
            assert sum(1 for _ in sheet.rows()) == 30_000

    def test_neither_utf8_nor_windows_1252(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS\nCLI;C\xe91\nCLI;C\x81\n")
        assert rejection(path) == (
            't.csv: the file is neither UTF-8 nor Windows-1252 text (line 3 has the byte 0x81); '
            'save it as "CSV UTF-8"')

    def test_utf16_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.txt", "FICHE\tTIERS\n".encode("utf-16"))
        assert rejection(path) == ('t.txt: this is UTF-16 text (Excel\'s "Unicode text"); '
                                   'save it as "CSV UTF-8" or .xlsx')


class TestNotText:
    def test_an_xlsx_renamed_csv(self, tmp_path: Path) -> None:
        xlsx = write_xlsx(tmp_path / "t.xlsx", [["FICHE", "TIERS"]])
        path = xlsx.rename(tmp_path / "targets.csv")
        assert rejection(path) == (
            "targets.csv: this is not a text CSV file (looks like a ZIP/xlsx archive); "
            "save it as .csv or .xlsx")

    def test_binary_data(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", bytes(range(256)) * 4)
        assert rejection(path) == ("t.csv: this is not a text CSV file (looks like binary "
                                   "data); save it as .csv or .xlsx")

    def test_control_characters_without_nul(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS\n" + b"\x01\x02\x03\x04ab" * 100)
        assert "looks like binary data" in rejection(path)

    def test_a_pdf(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        assert "(looks like a PDF document)" in rejection(path)


class TestEmptyFiles:
    @pytest.mark.parametrize("data", [b"", b"\n\n\r\n  \n", b"\xef\xbb\xbf", b";;\n;;;\n"],
                             ids=["zero-bytes", "blank-lines", "bom-only", "separators-only"])
    def test_an_empty_csv(self, tmp_path: Path, data: bytes) -> None:
        path = write_bytes(tmp_path / "t.csv", data)
        assert rejection(path) == "t.csv: the file is empty"

    def test_an_empty_xlsx(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [])
        assert rejection(path) == "t.xlsx: the file is empty"

    def test_a_header_without_rows_yields_nothing(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS\n\n")
        assert read(path) == []


class TestMissingColumns:
    def test_a_file_with_only_a_title(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "targets.xlsx", [["Liste des cibles"]])
        assert rejection(path) == (
            "targets.xlsx: no header row with the columns FICHE and TIERS in the first 20 rows "
            "(row 1 has: Liste des cibles); add them")

    def test_the_message_shows_the_likeliest_row(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "targets.csv",
                           b"Export\n\nNAME;CITY\nDupont;Paris\nFICHE;NOM;VILLE\n")
        assert rejection(path) == (
            "targets.csv: no header row with the columns FICHE and TIERS in the first 20 rows "
            "(row 5 has: FICHE, NOM, VILLE); add them")

    def test_one_required_column(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "answers.csv", b"NAME,CITY\nDupont,Paris\n")
        assert rejection(path, required=["code"]) == (
            "answers.csv: no header row with the column TIERS in the first 20 rows "
            "(row 1 has: NAME, CITY); add it")

    def test_blank_top_rows(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [[]] * 3 + [["FICHE", "TIERS"]])
        assert rejection(path, max_header_scan=3) == (
            "t.xlsx: no header row with the columns FICHE and TIERS in the first 3 rows "
            "(the first 3 rows are empty); add them")


class TestHeaderMatching:
    @pytest.mark.parametrize("kind,code,first_name,postal", [
        ("FICHE", "TIERS", "PRENOM", "CP"),
        (" fiche ", "tiers", "Prénom", "postal code"),
        ("Kind", "Code", "PRÉNOM", "Postal-Code"),
        ("kind", "CODE ", "first name", "POSTAL_CODE"),
        ("Fiché", "Tiers", "First-Name", "postal  code"),
    ])
    def test_case_accents_spaces_and_separators(
        self, tmp_path: Path, kind: str, code: str, first_name: str, postal: str,
    ) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [[kind, code, first_name, postal],
                                                ["CLI", "C1", "Zoé", "75001"]])
        assert read(path) == [(2, {"kind": "CLI", "code": "C1", "first_name": "Zoé",
                                   "postal_code": "75001"})]

    def test_fold_header(self) -> None:
        assert fold_header("  Code_postal-Ville ") == "CODE POSTAL VILLE"
        assert fold_header("Préférence ÉTÉ") == "PREFERENCE ETE"

    def test_two_headers_for_one_key(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "parties.xlsx", [["FICHE", "NOM", "TIERS", "NAME"]])
        assert rejection(path) == (
            "parties.xlsx row 1: columns B (NOM) and D (NAME) are the same column; "
            "keep only one")

    def test_two_identical_custom_headers(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "p.csv", b"FICHE;TIERS;Secteur;SECTEUR \n")
        assert rejection(path) == (
            "p.csv row 1: columns C (Secteur) and D (SECTEUR) are the same column; "
            "keep only one")
        assert read(path, keep_other=False) == []

    def test_other_columns_are_kept_under_their_header(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "p.xlsx", [
            ["FICHE", "TIERS", " Secteur d'activité ", "STAT(2)", "q1.catalogue"],
            ["CLI", "C1", "Bâtiment", 7, "oui"],
        ])
        with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
            assert [c.key for c in sheet.columns] == [
                "kind", "code", "SECTEUR D'ACTIVITÉ", "STAT(2)", "Q1.CATALOGUE"]
            assert sheet.columns[2].header == "Secteur d'activité"
            assert list(sheet.rows()) == [(2, {
                "kind": "CLI", "code": "C1", "SECTEUR D'ACTIVITÉ": "Bâtiment", "STAT(2)": "7",
                "Q1.CATALOGUE": "oui"})]

    def test_other_columns_are_dropped_on_request(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;SECTEUR;TIERS\nCLI;BTP;C1\n")
        with open_sheet(path, aliases=ALIASES, required=REQUIRED, keep_other=False) as sheet:
            assert [c.key for c in sheet.columns] == ["kind", "code"]
            assert list(sheet.rows()) == [(2, {"kind": "CLI", "code": "C1"})]

    def test_aliases_must_cover_required_keys(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS\n")
        with pytest.raises(ValueError, match="without aliases"):
            open_sheet(path, aliases={"kind": ["FICHE"]}, required=["kind", "code"])


class TestXlsxValues:
    def test_numbers_dates_and_text(self, tmp_path: Path) -> None:
        values = {
            "INT": 12, "FLOAT_INT": 12.0, "FLOAT": 3.5, "SUM": 0.1 + 0.2, "SMALL": 0.00001,
            "BIG": 1e20, "NEG": -4.25, "DATETIME": datetime(2024, 3, 1, 14, 30),
            "SECONDS": datetime(2024, 3, 1, 14, 30, 5), "DATE": date(2024, 3, 1),
            "TIME": time(9, 15), "BOOL": True, "TEXT": "  x  ", "BLANK": "   ",
            "ZIP": "01234", "FORMULA": "=1+1",
        }
        path = write_xlsx(tmp_path / "t.xlsx", [["FICHE", "TIERS", *values],
                                                ["CLI", "C1", *values.values()]])
        [(_, row)] = read(path)
        assert row == {
            "kind": "CLI", "code": "C1", "INT": "12", "FLOAT_INT": "12", "FLOAT": "3.5",
            "SUM": "0.3", "SMALL": "0.00001", "BIG": "100000000000000000000", "NEG": "-4.25",
            "DATETIME": "2024-03-01T14:30", "SECONDS": "2024-03-01T14:30:05",
            "DATE": "2024-03-01", "TIME": "09:15", "BOOL": "TRUE", "TEXT": "x", "BLANK": None,
            "ZIP": "01234",
            "FORMULA": None,  # never computed by Excel, so no cached value to read
        }

    def test_a_numeric_header_is_text(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [["FICHE", "TIERS", 2024], ["CLI", "C1", 5]])
        assert read(path) == [(2, {"kind": "CLI", "code": "C1", "2024": "5"})]

    def test_the_sheet_option(self, tmp_path: Path) -> None:
        path = tmp_path / "t.xlsx"
        workbook = Workbook()
        workbook.active.append(["notes"])
        second = workbook.create_sheet("Cibles")
        second.append(["FICHE", "TIERS"])
        second.append(["CLI", "C1"])
        workbook.save(path)
        assert read(path, sheet="Cibles") == [(2, {"kind": "CLI", "code": "C1"})]
        assert rejection(path, sheet="Nope") == (
            "t.xlsx: no sheet named 'Nope'; the sheets are Sheet, Cibles")


class TestExtraCells:
    def test_non_empty_cells_past_the_last_header(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS\nCLI;C1;;\nCLI;C2;;x;y\n")
        assert read(path) == [
            (2, {"kind": "CLI", "code": "C1"}),
            (3, {"kind": "CLI", "code": "C2", EXTRA: 'D="x", E="y"'}),
        ]

    def test_cells_under_a_blank_header(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [["FICHE", None, "TIERS"],
                                                ["CLI", "oops", "C1"], ["CLI", None, "C2"]])
        assert read(path) == [
            (2, {"kind": "CLI", "code": "C1", EXTRA: 'B="oops"'}),
            (3, {"kind": "CLI", "code": "C2"}),
        ]

    def test_dropped_columns_are_not_extra(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS;SECTEUR\nCLI;C1;BTP\n")
        assert read(path, keep_other=False) == [(2, {"kind": "CLI", "code": "C1"})]

    def test_short_rows_have_none(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.csv", b"FICHE;TIERS;CONTACT\nCLI\n")
        assert read(path) == [(2, {"kind": "CLI", "code": None, "contact": None})]


class TestRowNumbers:
    def test_csv_blank_lines_and_multiline_cells(self, tmp_path: Path) -> None:
        data = (b"Titre\n\nFICHE;TIERS;NOM\n\nCLI;C1;\"Dupont\nJean\"\n;;\n"
                b"PRO;P2;Martin\r\n\r\nFOU;F3;x\n")
        path = write_bytes(tmp_path / "t.csv", data)
        assert [(n, row["code"]) for n, row in read(path)] == [(5, "C1"), (8, "P2"), (10, "F3")]

    def test_xlsx_blank_rows(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "t.xlsx", [
            ["Titre"], [], ["FICHE", "TIERS"], [], ["CLI", "C1"], [None, "  "], [], ["PRO", "P2"],
        ])
        assert [(n, row["code"]) for n, row in read(path)] == [(5, "C1"), (8, "P2")]

    def test_broken_quotes_name_the_line(self, tmp_path: Path) -> None:
        data = b"FICHE;TIERS\nCLI;C1\nCLI;\"" + b"x" * 200_000 + b"\n"
        path = write_bytes(tmp_path / "t.csv", data)
        message = rejection(path)
        assert message.startswith("t.csv: line 3: cannot split it into cells (")
        assert message.endswith("); check the quotes around that line")


class TestFileTypes:
    def test_old_excel_is_refused(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.xls", b"\xd0\xcf\x11\xe0")
        assert rejection(path) == (
            "t.xls: old Excel .xls files cannot be read; open it in Excel and save it as .xlsx")

    def test_unknown_extensions_are_refused(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.ods", b"x")
        assert rejection(path) == "t.ods: cannot read .ods; use one of .xlsx, .csv, .txt, .tsv"

    def test_a_missing_file(self, tmp_path: Path) -> None:
        assert rejection(tmp_path / "nope.csv") == "nope.csv: no such file; check the path"

    def test_a_text_file_named_xlsx(self, tmp_path: Path) -> None:
        path = write_bytes(tmp_path / "t.xlsx", b"FICHE;TIERS\nCLI;C1\n")
        assert rejection(path) == (
            "t.xlsx: this is not an Excel .xlsx workbook (looks like text); "
            "save it as .xlsx from Excel, or as .csv")

    def test_a_word_document_named_xlsx(self, tmp_path: Path) -> None:
        path = tmp_path / "t.xlsx"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("[Content_Types].xml", "<Types/>")
            archive.writestr("word/document.xml", "<document/>")
        message = rejection(path)
        assert message.startswith("t.xlsx: this is not a valid Excel .xlsx workbook (")
        assert message.endswith("); open it in Excel and save it as .xlsx")

    def test_upper_case_extension(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "T.XLSX", [["FICHE", "TIERS"], ["CLI", "C1"]])
        assert read(path) == [(2, {"kind": "CLI", "code": "C1"})]


class TestBoundedMemory:
    def test_200k_rows_csv(self, tmp_path: Path) -> None:
        path = tmp_path / "big.csv"
        with path.open("w", encoding="utf-8", newline="") as file:
            file.write("FICHE;TIERS;NOM;VILLE;SECTEUR\n")
            for i in range(200_000):
                file.write(f"CLI;C{i:06};Société {i};Montréal;BTP\n")
        assert path.stat().st_size > 8_000_000
        tracemalloc.start()
        try:
            count = last = 0
            with open_sheet(path, aliases=ALIASES, required=REQUIRED) as sheet:
                for last, _row in sheet.rows():
                    count += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (count, last) == (200_000, 200_001)
        assert peak < 2_000_000


class TestRoundTrip:
    cells = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=12)

    @settings(max_examples=60, deadline=None)
    @given(rows=st.lists(st.tuples(cells, cells), max_size=8),
           delimiter=st.sampled_from([";", "\t", ","]),
           encoding=st.sampled_from(["utf-8", "utf-8-sig"]))
    def test_csv_values_come_back_stripped(
        self, rows: list[tuple[str, str]], delimiter: str, encoding: str,
    ) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "t.csv"
            with path.open("w", encoding=encoding, newline="") as file:
                writer = csv.writer(file, delimiter=delimiter)
                writer.writerow(["TIERS", "NOM"])
                writer.writerows(rows)
            got = [row for _, row in read(path, required=["code"])]
        expected = [{"code": a.strip() or None, "name": b.strip() or None} for a, b in rows]
        assert got == [row for row in expected if any(row.values())]


class TestLimits:
    """A file too wide for the staging table, or holding a NUL byte, gets one clear error."""

    def test_too_many_csv_columns(self, tmp_path: Path) -> None:
        header = ";".join(["FICHE", "TIERS", *(f"X{i}" for i in range(4_998))])
        path = write_bytes(tmp_path / "wide.csv", f"{header}\nPRO;P1\n".encode())
        assert rejection(path) == ("wide.csv: the file has 5,000 columns (its header is row 1); at most "
                                   "1,000 are allowed: delete the columns you do not import")

    def test_too_many_xlsx_columns(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path / "wide.xlsx", [["title"], ["FICHE", "TIERS", *(f"X{i}" for i in range(999))]])
        assert "the file has 1,001 columns (its header is row 2); at most 1,000" in rejection(path)

    def test_a_thousand_columns_are_read(self, tmp_path: Path) -> None:
        header = ";".join(["FICHE", "TIERS", *(f"X{i}" for i in range(998))])
        path = write_bytes(tmp_path / "wide.csv", f"{header}\nPRO;P1\n".encode())
        assert read(path)[0][1]["code"] == "P1"

    def test_a_nul_byte_names_its_row_and_column(self, tmp_path: Path) -> None:
        rows = "".join(f"PRO;P{i};Nom {i}\n" for i in range(2, 12))
        path = write_bytes(tmp_path / "t.csv", f"FICHE;TIERS;NOM\n{rows}".encode() + b"PRO;P12;No\x00m\n")
        assert rejection(path) == ('t.csv row 12: NUL byte (0x00) in column C: no text may hold one; remove it '
                                   '(the export may be damaged) or save the file again as "CSV UTF-8"')

    def test_a_nul_byte_after_a_multiline_cell_names_the_row(self, tmp_path: Path) -> None:
        late = "".join(f"PRO;P{i};Nom\n" for i in range(4, 5_000))  # past the first chunk read
        data = f'FICHE;TIERS;NOM\nPRO;P2;"deux\nlignes"\n{late}'.encode() + b"PRO;\x00X;Nom\n"
        path = write_bytes(tmp_path / "t.csv", data)
        assert rejection(path).startswith("t.csv row 5000: NUL byte (0x00) in column B")
