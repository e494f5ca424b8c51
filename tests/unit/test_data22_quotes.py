"""Session 22 (data22): quoted CSV values that run past their line, in the value check's messages.

An unterminated quote in a column whose values are checked (the last one, or any once the field count is
right), or one closed some lines later, was reported by the value check as a bad value ("line 4, column
'timestamp': '200\\n4,40,300\\n...' is not a number"): the right line, but the quote not named. And the line
of a bad value counted one row per non-blank line, so a legitimate quoted value holding line breaks earlier
in the file (valid CSV: Arrow reads it as one value) made every later value error name the wrong line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import cfg, sequences_by_user

from metarec_dist.data import prepare_data
from metarec_dist.data.errors import DataError

HEADER = "user_id,item_id,timestamp\n1,10,100\n"


def _error(tmp_path: Path, text: str, **settings) -> str:
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        prepare_data(cfg(path=str(path), format="csv", **settings))
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg.removeprefix(f"{path}: ")


def test_an_unterminated_quote_in_the_last_column_is_named_at_its_line(tmp_path):
    msg = _error(tmp_path, HEADER + '2,20,50\n3,30,"200\n4,40,300\n5,50,500\n')
    assert msg.startswith(
        "line 4, column 'timestamp': the quote (\") that opens this value is never closed (an unterminated "
        "quote): the rest of the file, lines 4-6, is read as its value; close the quote on line 4"
    )
    assert "is not a number" not in msg  # the rest of the file is not shown as "the value"


def test_a_quote_closed_lines_later_in_the_last_column_names_both_lines(tmp_path):
    msg = _error(tmp_path, HEADER + '2,20,"5\n\n0"\n3,30,300\n')
    assert msg.startswith(
        "line 3, column 'timestamp': the quote (\") that opens this value runs past the end of the line and "
        "is closed only on line 5, so lines 3-5 are read as one value ('5\\n\\n0' is not a number"
    )
    assert msg.endswith(
        'close the quote on line 3 (a quote that is part of a value: doubled, in a quoted value, "a""b")'
    )


def test_a_checked_middle_column_with_a_quote_closed_later_is_named_too(tmp_path):
    # the field count is right (the quote closes before the row's last separator): only the value is bad
    msg = _error(tmp_path, HEADER + '2,"2\n0",50\n3,30,300\n')
    assert msg.startswith("line 3, column 'item_id': the quote (\") that opens this value runs past the end")


NOTES = 'user_id,item_id,timestamp,note\n1,10,100,"a\nb"\n2,20,50,"c\n\nd"\n3,30,60,x\n'


def test_a_value_error_after_quoted_line_breaks_names_the_physical_line(tmp_path):
    # lines: 1 header, 2-3 one row, 4-6 one row (a blank line inside the quotes), 7, then the bad value on 8
    msg = _error(tmp_path, NOTES + "4,40,x,y\n")
    assert msg.startswith("line 8, column 'timestamp': 'x' is not a number")


def test_a_bad_value_on_a_later_line_of_its_row_names_that_line(tmp_path):
    # the note opens on line 2 and closes on line 3, where the row's timestamp is
    msg = _error(tmp_path, 'user_id,note,item_id,timestamp\n1,"a\nb",10,x\n')
    assert msg.startswith("line 3, column 'timestamp': 'x' is not a number")


def test_valid_quoted_line_breaks_in_unchecked_and_string_columns_still_read(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text('user_id,item_id,timestamp,note\n1,"1\n0",100,"a\nb"\n1,20,110,c\n2,30,50,d\n')
    prepared = prepare_data(cfg(path=str(path), format="csv", string_ids=True, valid_frac=0, test_frac=0))
    assert sorted(prepared.item_raw_ids) == ["1\n0", "20", "30"]


# Arrow reads a CSV file in blocks (1 MiB) split at line ends, inside quotes too unless told values may hold
# line breaks: a quote never closed took the rest of its block and those rows were dropped without a word (a
# 3 MB log with one in its third row lost 73,577 of 200,002 rows), and a valid quoted line break at a block's
# end split its row.
MANY = 120_000  # rows: ~1.7 MB, two blocks


def _many_rows(users: int = 500) -> str:
    return "".join(f"{i % users},{i % 3000},{i}\n" for i in range(MANY))


@pytest.mark.parametrize("opening", ['2,"20,50\n', '2,20,"50\n'])
def test_an_unterminated_quote_in_a_file_of_several_blocks_is_an_error_not_lost_rows(tmp_path, opening):
    msg = _error(tmp_path, HEADER + opening + _many_rows())
    column = "item_id" if opening.startswith('2,"') else "timestamp"
    # the field count check (Arrow: a row too short) or the value check (a long bad timestamp) names it
    assert msg.startswith("line 3") and f"'{column}'" in msg and "is never closed" in msg


def test_valid_quoted_line_breaks_across_blocks_read_every_row(tmp_path):
    path = tmp_path / "log.csv"
    rows = "".join(f'{i % 500},{i},{i},"a note\non two lines"\n' for i in range(MANY // 2))
    path.write_text("user_id,item_id,timestamp,note\n" + rows)
    prepared = prepare_data(cfg(path=str(path), format="csv"))
    assert sum(map(len, sequences_by_user(prepared))) == MANY // 2  # every row, each item once


def test_an_unterminated_quote_in_a_column_not_read_is_an_error_not_lost_rows(tmp_path):
    # the `note` column is not read: Arrow took the rest of the file as its value without any error, and
    # data stats showed 41 of 80 interactions (the lead's reproduction, session 22)
    bad = '"oops'
    rows = [f"{i % 8},{i},{1000 + i},{bad if i == 40 else 'ok'}" for i in range(80)]
    msg = _error(tmp_path, "user_id,item_id,timestamp,note\n" + "\n".join(rows) + "\n")
    assert msg.startswith(
        "line 42, column 'note': the quote (\") that opens this value is never closed (an unterminated "
        "quote): the rest of the file, lines 42-81, is read as its value"
    )


def test_a_literal_quote_inside_an_unquoted_value_is_read_as_before(tmp_path):
    # an odd number of quotes, all literal (Arrow takes a quote only at a value's start): no error, every row
    path = tmp_path / "log.csv"
    literal = '5" screen'
    rows = [f"{i % 4},{i},{1000 + i},{literal if i == 3 else 'ok'}" for i in range(12)]
    path.write_text("user_id,item_id,timestamp,note\n" + "\n".join(rows) + "\n")
    seqs = sequences_by_user(prepare_data(cfg(path=str(path), format="csv", min_history=1)))
    assert sum(len(s) for s in seqs) == 12
