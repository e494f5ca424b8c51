"""Session 22 (data22): item titles split only at line ends.

The titles reader split lines with ``str.splitlines``, which also splits at U+0085 (NEL), U+2028, form
feeds and a few more. A Windows-1252 titles file ("…" is byte 0x85) read with the default encoding is read
as Latin-1, where 0x85 is U+0085: "Five… Alive (1995)" became the title "Five", and " Alive (1995)|..." a
line of its own (skipped: no item id). Lines now end at "\\n", "\\r\\n" or "\\r" only, as the log's.
"""

from __future__ import annotations

import pytest
from data_fixtures import cfg, write_recbole, write_u_data

from metarec_dist.data import prepare_data

U_ITEM = "{i}|{t}|01-Jan-1995||http://x|0|1{end}"


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("utf-8", "Five\x85 Alive (1995)"),  # not UTF-8: read as Latin-1, as MovieLens' own u.item
        ("cp1252", "Five… Alive (1995)"),
    ],
)
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_windows_1252_ellipsis_in_a_u_item_title_keeps_the_title_whole(tmp_path, encoding, expected, end):
    folder = tmp_path / "ml"
    write_u_data(folder)
    titles = {10: "Ten (1995)", 20: "Five… Alive (1995)", 30: "Thirty (1997)", 40: "Forty (1998)"}
    text = "".join(U_ITEM.format(i=i, t=t, end=end) for i, t in titles.items())
    (folder / "u.item").write_bytes(text.encode("cp1252"))
    prepared = prepare_data(cfg(path=str(folder), format="auto", encoding=encoding))
    assert prepared.item_titles == {1: "Ten (1995)", 2: expected, 3: "Thirty (1997)", 4: "Forty (1998)"}


def test_unicode_line_separators_in_a_utf8_recbole_title_are_part_of_it(tmp_path):
    folder = tmp_path / "rb"
    write_recbole(folder)
    item = folder / "rb.item"
    lines = item.read_text().replace("Ten (1995)", "Ten\x0c\u2028(1995)").replace("\n", "\r")  # "\r" ends
    item.write_text(lines, newline="")
    titles = prepare_data(cfg(path=str(folder), format="auto")).item_titles
    assert titles[1] == "Ten\x0c\u2028(1995)" and titles[2] == "Twenty, The (1996)" and len(titles) == 4
