"""Parsing a version's files with pyarrow: types and nulls inferred, CSV errors that name the
line, Parquet, directories whose schemas must agree, the recorded schema read back exactly,
and previews that JSON can carry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_iris

from stratus.datasets.parse import read_all, read_file
from stratus.datasets.schema import arrow_schema, describe, jsonable, preview, public
from stratus.errors import BadRequest


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = [bunch.target_names[i] for i in bunch.target]
    return frame


def test_iris_csv_types_rows_and_nulls(tmp_path: Path) -> None:
    frame = iris_frame()
    frame.loc[[3, 40], "petal width (cm)"] = None
    frame.loc[7, "species"] = None
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    table = read_all([("iris.csv", path)], "csv")
    described = describe(table)
    assert table.num_rows == 150
    assert [(c["name"], c["type"], c["nulls"]) for c in described["columns"]] == [
        ("sepal length (cm)", "double", 0), ("sepal width (cm)", "double", 0),
        ("petal length (cm)", "double", 0), ("petal width (cm)", "double", 2),
        ("target", "int64", 0), ("species", "string", 1)]
    assert table.column("sepal length (cm)").to_pylist() == frame["sepal length (cm)"].tolist()
    assert "arrow" not in public(described)


def test_empty_cells_and_null_markers_count_as_nulls_in_text_too(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", "a,b,c\n1,,x\nNA,2,\n3,NULL,z\n")
    table = read_file("n.csv", path, "csv")
    assert [table.column(n).null_count for n in "abc"] == [1, 2, 1]
    assert table.schema.types == [pa.int64(), pa.int64(), pa.string()]


@pytest.mark.parametrize(("text", "line", "detail"), [
    ("a,b,c\n1,2,3\n4,5,6\n7,8\n9,10,11\n", 4, "expected 3 columns, got 2: 7,8"),
    ("a,b\n1,2\n\n\n3,4\n5\n", 6, "expected 2 columns, got 1: 5"),  # blank lines still count
    ("a,b\n" + "1,x\n" * 5000 + "1,y,z\n", 5002, "expected 2 columns, got 3: 1,y,z"),
    ("a,b\r\n1,2\r\n3,4,5\r\n", 3, "expected 2 columns, got 3"),
])
def test_a_csv_that_does_not_parse_names_its_line(tmp_path: Path, text: str, line: int,
                                                  detail: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(BadRequest) as caught:
        read_all([("part/bad.csv", path)], "csv")
    assert caught.value.message.startswith(f"part/bad.csv: line {line}: ")
    assert detail in caught.value.message


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"a,a\n1,2\n", "the column name 'a' appears twice"),
    (b"a,,c\n1,2,3\n", "column 2 has no name"),
])
def test_csv_files_without_a_usable_header_are_refused(tmp_path: Path, data: bytes,
                                                       message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        read_file("x.csv", write(tmp_path / "x.csv", data), "csv")


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.csv", b"name,n\nabc,1\nd\xe9f,2\n")
    for schema in (None, pa.schema([("name", pa.string()), ("n", pa.int64())])):
        with pytest.raises(BadRequest, match=r"latin\.csv: line 3: the text is not valid UTF-8"):
            read_file("latin.csv", path, "csv", schema)


def test_parquet_keeps_its_types_and_drops_pandas_metadata(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.5, None, 3.0], "when": pd.to_datetime(
        ["2024-01-01", "2024-01-02", None]), "label": pd.Categorical(["a", "b", "a"])})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    table = read_all([("data.parquet", path)], "parquet")
    assert table.schema.metadata is None
    assert [c["nulls"] for c in describe(table)["columns"]] == [1, 1, 0]
    assert str(table.schema.field("when").type).startswith("timestamp")
    assert pa.types.is_dictionary(table.schema.field("label").type)


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", "a,b\n1,2\n")
    with pytest.raises(BadRequest, match=r"x\.parquet is not a readable Parquet file"):
        read_all([("x.parquet", path)], "parquet")


def test_a_directory_concatenates_in_order_and_widens_types(tmp_path: Path) -> None:
    one = write(tmp_path / "1.csv", "id,score,note\n1,10,\n2,20,\n")  # note: all empty -> null
    two = write(tmp_path / "2.csv", "id,score,note\n3,2.5,late\n")
    table = read_all([("1.csv", one), ("2.csv", two)], "csv")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.schema.types == [pa.int64(), pa.float64(), pa.string()]
    assert table.column("score").to_pylist() == [10.0, 20.0, 2.5]
    assert describe(table)["columns"][2]["nulls"] == 2


def test_a_directory_whose_schemas_disagree_is_refused(tmp_path: Path) -> None:
    one = write(tmp_path / "1.csv", "id,name\n1,a\n")
    other_columns = write(tmp_path / "2.csv", "id,title\n2,b\n")
    with pytest.raises(BadRequest, match=r"do not share one schema: 2\.csv has the columns"):
        read_all([("1.csv", one), ("2.csv", other_columns)], "csv")
    text_and_number = write(tmp_path / "3.csv", "id,name\nx,b\n")
    with pytest.raises(BadRequest, match=r"do not share one schema.*int64 vs string"):
        read_all([("1.csv", one), ("3.csv", text_and_number)], "csv")


def test_the_recorded_schema_reads_back_the_same_types(tmp_path: Path) -> None:
    """A reader given the recorded schema sees the push's types, even for a file that alone
    would infer others (integers widened to floats beside another file)."""
    one = write(tmp_path / "1.csv", "id,score\n1,10\n")
    two = write(tmp_path / "2.csv", "id,score\n2,0.5\n")
    sources = [("1.csv", one), ("2.csv", two)]
    pushed = read_all(sources, "csv")
    schema = arrow_schema(json.loads(json.dumps(describe(pushed))))
    assert schema.equals(pushed.schema)
    alone = read_file("1.csv", one, "csv", schema)
    assert alone.schema.equals(schema) and alone.column("score").to_pylist() == [10.0]
    assert read_all(sources, "csv", schema).equals(pushed)


def test_a_file_unlike_the_recorded_schema_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(BadRequest, match="are not the dataset's"):
        read_file("x.csv", path, "csv", pa.schema([("a", pa.int64()), ("c", pa.int64())]))


def test_previews_are_the_first_twenty_rows_as_json(tmp_path: Path) -> None:
    table = pa.table({"i": list(range(30)), "x": [float("nan"), float("inf")] + [0.5] * 28})
    rows = preview(table)
    assert len(rows) == 20 and rows[0] == {"i": 0, "x": None} and rows[1]["x"] is None
    json.dumps(rows, allow_nan=False)


def test_jsonable_turns_cells_into_what_json_carries() -> None:
    import datetime
    import decimal

    assert jsonable(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert jsonable(datetime.datetime(2024, 1, 2, 3, 4)) == "2024-01-02T03:04:00"
    assert jsonable(datetime.timedelta(seconds=90)) == 90.0
    assert jsonable(decimal.Decimal("1.10")) == "1.10"
    assert jsonable(b"ab\xff") == "ab\ufffd"
    assert jsonable({"k": [1.0, float("nan")]}) == {"k": [1.0, None]}
