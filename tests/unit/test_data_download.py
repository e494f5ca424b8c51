"""Downloads against a local HTTP server: success, checksum mismatch, HTTP 500, a cut transfer, offline.
After every failure the data folder must hold nothing: no partial zip, no half-extracted folder."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest
from data_fixtures import EXPECTED, ROWS, write_recbole, write_u_data

from metarec_dist.data import DataError, download, find_or_download, prepare_data
from metarec_dist.data import fetch as download_module
from metarec_dist.data.config import DataConfig


def _zip(entries: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
    return buf.getvalue()


U_DATA = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
GOOD = _zip({"ml-100k/u.data": U_DATA, "ml-100k/README": "test copy\n"})
SLIP = _zip({"../evil.txt": "x"})  # a zip-slip entry must never be extracted
PIN = {"movielens-100k": hashlib.sha256(GOOD).hexdigest()}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        mode = self.path.strip("/").split("/")[0]
        if mode == "error":
            self.send_error(500, "boom")
            return
        body = {"ok": GOOD, "tampered": GOOD[:-1] + b"X", "slip": SLIP}.get(mode, GOOD)
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        if mode == "cut":  # promise more than we send, then hang up
            self.send_header("Content-Length", str(len(body) + 5000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_success(tmp_path, server):
    folder = download("movielens-100k", tmp_path, base_url=f"{server}/ok", sha256=PIN)
    assert folder == tmp_path / "ml-100k"
    assert (folder / "u.data").read_text() == U_DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]  # no temp files left
    # Already there: returned without touching the network.
    assert download("ml-100k", tmp_path, base_url="http://127.0.0.1:1", sha256=PIN) == folder


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("tampered", "sha256 mismatch"),
        ("error", "HTTP 500"),
        ("cut", "interrupted"),
        ("slip", "unsafe path"),
    ],
)
def test_download_failures_leave_nothing_behind(tmp_path, server, mode, expected):
    pin = PIN if mode != "slip" else {"movielens-100k": hashlib.sha256(SLIP).hexdigest()}
    with pytest.raises(DataError, match=expected) as info:
        download("movielens-100k", tmp_path / "data", base_url=f"{server}/{mode}", sha256=pin, timeout=10)
    assert list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    if mode != "slip":
        assert "unzip it into" in str(info.value)  # tells the user how to install it by hand


def test_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as info:
        download("movielens-1m", tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}", timeout=5)
    message = str(info.value)
    assert "offline" in message and "ml-1m.zip" in message and str(tmp_path) in message
    assert "--set data.format=synthetic" in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="known datasets are movielens-100k"):
        download("netflix", tmp_path)


def test_pinned_hashes_cover_every_archive():
    assert set(download_module.SHA256) == set(download_module.ARCHIVES)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in download_module.SHA256.values())


def test_find_existing_recbole_layout_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "GROUPLENS_URL", f"http://127.0.0.1:{_closed_port()}")
    write_recbole(tmp_path / "ml-100k")
    assert find_or_download("movielens-100k", tmp_path) == tmp_path / "ml-100k"
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path))
    prepared = prepare_data(
        DataConfig(
            format="auto", name="movielens-100k", cache=False, min_history=1, valid_frac=0.25, test_frac=0.25
        )
    )
    assert [list(s) for s in prepared.users["items"]] == EXPECTED
    assert prepared.item_titles is not None


def test_find_existing_grouplens_layout(tmp_path):
    write_u_data(tmp_path / "ml-100k")
    assert find_or_download("ml-100k", tmp_path) == tmp_path / "ml-100k"


def test_find_any_named_folder(tmp_path):
    write_recbole(tmp_path / "amazon-books")
    assert find_or_download("amazon-books", tmp_path) == tmp_path / "amazon-books"
    with pytest.raises(DataError, match="not found in"):
        find_or_download("yelp", tmp_path)


def test_find_downloads_when_missing(tmp_path, server, monkeypatch):
    monkeypatch.setattr(download_module, "GROUPLENS_URL", f"{server}/ok")
    monkeypatch.setattr(download_module, "SHA256", PIN)
    prepared = prepare_data(
        DataConfig(
            format="movielens",
            name="movielens-100k",
            data_dir=str(tmp_path),
            cache=False,
            min_history=1,
            valid_frac=0.25,
            test_frac=0.25,
        )
    )
    assert [list(s) for s in prepared.users["items"]] == EXPECTED
    assert (tmp_path / "ml-100k" / "u.data").is_file()


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_data_folder_that_is_a_file_is_named(tmp_path, below):
    """`metarec data download --data-dir afile` said "[Errno 17] File exists" (or "Not a directory")."""
    (tmp_path / "afile").write_text("x")
    folder = tmp_path / "afile" / below if below else tmp_path / "afile"
    with pytest.raises(DataError, match=f"{tmp_path / 'afile'} is a file, not a folder"):
        download("movielens-100k", folder, base_url="http://127.0.0.1:1", sha256=PIN)
