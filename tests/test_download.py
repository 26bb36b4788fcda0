"""untar_data / download_url against a real HTTP server on 127.0.0.1 (in a thread): full downloads, resumed and
truncated transfers, wrong checksums, damaged cached archives, unsafe archives, local files, and no server at all.
No test touches the internet."""
import hashlib, io, os, socket, tarfile, threading, time, zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lessonkit.core import LessonkitError, LessonkitWarning
from lessonkit.datasets import (DATASETS, URLs, CorruptArchiveError, Dataset, DownloadError, _archive_path,
                                download_url, extract_archive, file_checksum, get_dataset, sample_path, untar_data,
                                verify_file)


# ---------------------------------------------------------------------------------------------------------- helpers
def make_tgz(files: dict, top: str | None = "toy") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(f"{top}/{name}" if top else name); ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


TOY = {"cats/1.txt": b"meow", "dogs/2.txt": b"woof"}
# random bytes do not compress: an archive bigger than 1 MiB, so fastai's first-MiB checksum differs from a full one
BIG = {"noise.bin": os.urandom(3 * 2**20 // 2), "readme.txt": b"hello"}


class Server:
    "A tiny HTTP server: serves `files`, honours Range (unless `ignore_range`), can cut the first transfer of a file short."
    def __init__(self):
        self.files, self.log, self.truncate, self.ignore_range = {}, [], {}, False
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass

            def do_GET(self):
                rng = self.headers.get("Range")
                srv.log.append((self.path, rng))
                data = srv.files.get(self.path)
                if data is None:
                    self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
                if rng and not srv.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416); self.send_header("Content-Length", "0"); self.end_headers(); return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    body = data[start:]
                else:
                    self.send_response(200); body = data
                self.send_header("Content-Length", str(len(body))); self.end_headers()
                cut = srv.truncate.pop(self.path, None) if not rng else None
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None: self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def add(self, name: str, data: bytes) -> str:
        self.files[f"/{name}"] = data
        return f"{self.url}/{name}"

    def requests(self, name: str) -> list:
        return [r for p, r in self.log if p == f"/{name}"]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown(); s.httpd.server_close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def sha(data: bytes) -> str: return "sha256:" + hashlib.sha256(data).hexdigest()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]   # closed again: nothing listens there


# ------------------------------------------------------------------------------------------------------ downloading
def test_download_check_extract_then_cached(server, home, tmp_path):
    data = make_tgz(TOY)
    ds = Dataset("toy", server.add("toy.tgz", data), len(data), sha(data))
    out = untar_data(ds)
    assert out == home / "data" / "toy"
    assert (out / "cats/1.txt").read_bytes() == b"meow" and (out / "dogs/2.txt").read_bytes() == b"woof"
    assert (home / "archives/toy.tgz").read_bytes() == data
    assert not list((home / "archives").glob("*.part"))
    assert untar_data(ds) == out and len(server.requests("toy.tgz")) == 1   # second call: no request at all
    assert untar_data(ds, dest=tmp_path / "elsewhere") == tmp_path / "elsewhere/toy"   # reuses the archive
    assert len(server.requests("toy.tgz")) == 1


def test_fastai_first_mib_checksum(server, tmp_path):
    data = make_tgz(BIG)
    assert len(data) > 2**20
    first_mib = "md5-1MiB:" + hashlib.md5(data[:2**20]).hexdigest()
    url = server.add("big.tgz", data)
    f = download_url(url, tmp_path / "big.tgz", size=len(data), checksum=first_mib)
    assert file_checksum(f, "md5-1MiB") == first_mib
    assert file_checksum(f, "md5") == "md5:" + hashlib.md5(data).hexdigest() != first_mib.replace("-1MiB", "")
    assert verify_file(f, len(data) + 1, first_mib).startswith("size is")


def test_resume_partial_part_file(server, tmp_path):
    data = make_tgz(BIG)
    url = server.add("big.tgz", data)
    half = len(data) // 2
    (tmp_path / "big.tgz.part").write_bytes(data[:half])    # left by an interrupted run
    f = download_url(url, tmp_path / "big.tgz", len(data), sha(data))
    assert f.read_bytes() == data
    assert server.requests("big.tgz") == [f"bytes={half}-"]   # asked only for the rest


def test_dropped_connection_is_resumed(server, tmp_path):
    data = make_tgz(BIG)
    url = server.add("big.tgz", data)
    server.truncate["/big.tgz"] = 700_000                     # the first transfer stops early
    f = download_url(url, tmp_path / "big.tgz", len(data), sha(data))
    assert f.read_bytes() == data
    assert server.requests("big.tgz") == [None, "bytes=700000-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    data = make_tgz(TOY)
    url = server.add("toy.tgz", data)
    server.ignore_range = True
    (tmp_path / "toy.tgz.part").write_bytes(data[:50])
    f = download_url(url, tmp_path / "toy.tgz", len(data), sha(data))
    assert f.read_bytes() == data                            # not the first 50 bytes twice


def test_stale_part_with_wrong_bytes_is_fetched_again(server, tmp_path):
    data = make_tgz(TOY)
    url = server.add("toy.tgz", data)
    (tmp_path / "toy.tgz.part").write_bytes(b"X" * 40)        # from another version of the file
    with pytest.warns(LessonkitWarning, match="fetching it again from the start"):
        f = download_url(url, tmp_path / "toy.tgz", len(data), sha(data))
    assert f.read_bytes() == data
    assert server.requests("toy.tgz") == ["bytes=40-", None]  # resumed, failed the check, fetched from the start


def test_wrong_checksum_fails_and_leaves_nothing(server, home):
    data = make_tgz(TOY)
    ds = Dataset("toy", server.add("toy.tgz", data), len(data), sha(b"another file"))
    with pytest.raises(DownloadError, match="not the expected one") as e, \
         pytest.warns(LessonkitWarning, match="is not right .*fetching it again from the start"):
        untar_data(ds)
    assert "checksum is sha256:" in str(e.value)
    assert len(server.requests("toy.tgz")) == 2               # one retry from scratch, then a clear error
    assert not (home / "archives/toy.tgz").exists() and not list((home / "archives").glob("*.part"))
    assert not (home / "data/toy").exists()


def test_wrong_size_fails(server, tmp_path):
    data = make_tgz(TOY)
    with pytest.raises(DownloadError, match=f"size is {len(data):,} bytes, expected {len(data) + 10:,}"), \
         pytest.warns(LessonkitWarning, match="is not right"):
        download_url(server.add("toy.tgz", data), tmp_path / "toy.tgz", size=len(data) + 10)


def test_damaged_cached_archive_is_fetched_again(server, home):
    data = make_tgz(TOY)
    ds = Dataset("toy", server.add("toy.tgz", data), len(data), sha(data))
    (home / "archives").mkdir(parents=True)
    (home / "archives/toy.tgz").write_bytes(data[:-20] + b"\0" * 20)   # same size, damaged
    with pytest.warns(LessonkitWarning, match=r"is damaged \(checksum is"):
        out = untar_data(ds)
    assert (out / "cats/1.txt").read_bytes() == b"meow"
    assert (home / "archives/toy.tgz").read_bytes() == data


def test_truncated_archive_without_checksum_is_never_half_used(server, home):
    data = make_tgz(BIG)
    url = server.add("cut.tgz", data[: len(data) // 2])       # the server itself has a broken file
    with pytest.raises(CorruptArchiveError, match="not a complete tar or zip archive"), \
         pytest.warns(LessonkitWarning, match="cannot be extracted; downloading it again"):
        untar_data(url)                                      # unknown URL: no size/checksum to compare with
    assert len(server.requests("cut.tgz")) == 2               # fetched again once before giving up
    assert not (home / "data/cut").exists()
    assert not [p for p in (home / "data").iterdir()]          # no partial folder either


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="answered 404"):
        download_url(f"{server.url}/missing.tgz", tmp_path / "missing.tgz")


def test_offline_fails_fast_with_instructions(home):
    ds = Dataset("pets", f"http://127.0.0.1:{dead_port()}/oxford-iiit-pet.tgz", sample="pets")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        untar_data(ds, timeout=3)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "You may be offline" in msg
    assert "sample_path('pets')" in msg
    assert str(home / "archives" / "oxford-iiit-pet.tgz") in msg  # the exact place to put the archive
    assert _archive_path(ds) == home / "archives" / "oxford-iiit-pet.tgz"


def test_archive_put_by_hand_is_used_offline(home, tmp_path):
    "The offline advice works: an archive copied to the named path is checked and extracted with no network."
    data = make_tgz(TOY)
    ds = Dataset("toy", f"http://127.0.0.1:{dead_port()}/toy.tgz", len(data), sha(data))
    (home / "archives").mkdir(parents=True)
    _archive_path(ds).write_bytes(data)
    assert (untar_data(ds) / "dogs/2.txt").read_bytes() == b"woof"


def test_force_downloads_and_extracts_again(server, home):
    data = make_tgz(TOY)
    ds = Dataset("toy", server.add("toy.tgz", data), len(data), sha(data))
    out = untar_data(ds)
    (out / "cats/1.txt").write_bytes(b"edited")
    assert (untar_data(ds, force=True) / "cats/1.txt").read_bytes() == b"meow"
    assert len(server.requests("toy.tgz")) == 2


# ------------------------------------------------------------------------------------------------ local and unsafe
def test_local_path_and_file_url(tmp_path):
    arc = tmp_path / "toy.tgz"; arc.write_bytes(make_tgz(TOY))
    out = untar_data(arc, dest=tmp_path / "d1")
    assert out == tmp_path / "d1/toy" and (out / "cats/1.txt").read_bytes() == b"meow"
    out2 = untar_data(arc.as_uri(), dest=tmp_path / "d2")
    assert (out2 / "dogs/2.txt").read_bytes() == b"woof"
    with pytest.raises(LessonkitError, match="No archive at"):
        untar_data(tmp_path / "nope.tgz")


def test_zip_and_flat_archives(tmp_path):
    z = tmp_path / "flat.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.txt", "A"); zf.writestr("b/c.txt", "C")
    out = untar_data(z, dest=tmp_path / "d")
    assert out == tmp_path / "d/flat" and (out / "a.txt").read_text() == "A" and (out / "b/c.txt").read_text() == "C"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_tar_is_refused(tmp_path, kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("toy/ok.txt"); ok.size = 2; tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "symlink":
            ti = tarfile.TarInfo("toy/link"); ti.type = tarfile.SYMTYPE; ti.linkname = "../../../etc/passwd"
            tf.addfile(ti)
        else:
            ti = tarfile.TarInfo("../escape.txt" if kind == "dotdot" else str(tmp_path / "abs.txt")); ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    arc = tmp_path / "evil.tgz"; arc.write_bytes(buf.getvalue())
    with pytest.raises(LessonkitError, match="Refusing to extract"):
        untar_data(arc, dest=tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert not list((tmp_path / "d").iterdir())               # nothing extracted, no partial folder


def test_unsafe_zip_is_refused(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf: zf.writestr("../escape.txt", "x")
    with pytest.raises(LessonkitError, match="Refusing to extract"):
        extract_archive(z, tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------------------------------------------------- registry
def test_registry_matches_fastai_checks():
    "Values from fastai/fastai fastai/data/checks.txt (size, MD5 of the first MiB), and fastai's URLs."
    assert URLs.PETS == "https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz"
    assert URLs.CIFAR == "https://s3.amazonaws.com/fast-ai-sample/cifar10.tgz"
    assert URLs.CALTECH_101 == "https://s3.amazonaws.com/fast-ai-imageclas/caltech_101.tgz"
    assert (DATASETS["pets"].size, DATASETS["pets"].checksum) == (811706944, "md5-1MiB:e4db5c768afd933bb91f5f594d7417a4")
    assert (DATASETS["cifar10"].size, DATASETS["cifar10"].checksum) == (168168549, "md5-1MiB:a5f8c31371b63a406b23368042812d3c")
    assert (DATASETS["caltech101"].size, DATASETS["caltech101"].checksum) == (131740031, "md5-1MiB:d673425306e98ee4619fcdeef8a0e876")
    assert get_dataset(URLs.PETS).folder_name == "oxford-iiit-pet"


def test_every_sample_is_bundled():
    for name in DATASETS:
        assert sample_path(name).is_dir(), name
    assert len(list((sample_path("pets") / "images").glob("*.jpg"))) == 222
    with pytest.raises(LessonkitError, match="no public download"):
        untar_data("vehicles")
