"""Compressed datasets (.gz, .bz2, .xz) read exactly as the plain file inside them; screen and train."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
from pathlib import Path

import pytest
from test_formats import ALPACA, MODEL, write_json
from test_samples import chat, write_jsonl

from pvdata.cli.main import main
from pvdata.errors import ConfigError, DataError
from pvdata.samples import read_dataset
from pvdata.training.data import read_samples

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def compressed(plain: Path, suffix: str) -> Path:
    out = plain.with_name(plain.name + suffix)
    out.write_bytes(COMPRESS[suffix](plain.read_bytes()))
    return out


def summary(ds):
    return (
        ds.format,
        ds.dataset_id,
        [(r.line, r.raw, r.sample_id, r.error) for r in ds.records],
        [s.sample_id for s in ds.samples],
    )


def plain_files(tmp_path: Path) -> list[Path]:
    good = json.dumps(chat("é?", "ü!"), ensure_ascii=False).encode()
    jl = tmp_path / "d.jsonl"
    jl.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + b'{"x": "\xff"}\n' + good + b"\n{bad json\n")
    arr = Path(write_json(tmp_path / "alpaca.json", ALPACA, indent=2))
    c = tmp_path / "d.csv"
    with c.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["prompt", "answer"])
        w.writeheader()
        w.writerows([{"prompt": "Why?", "answer": "Because,\nwell."}, {"prompt": "Last?", "answer": ""}])
    return [jl, arr, c]


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_reads_equal_the_plain_reads(tmp_path, suffix):
    for plain in plain_files(tmp_path):
        packed = compressed(plain, suffix)
        a, b = read_dataset(plain), read_dataset(packed)
        assert summary(a) == summary(b), packed.name
        assert b.source == str(packed.resolve())
    jsonl = read_dataset(tmp_path / f"d.jsonl{suffix}")
    assert "not UTF-8" in (jsonl.records[1].error or "") and jsonl.records[0].raw.startswith("\ufeff")
    assert [r.line for r in jsonl.invalid] == [2, 4]
    csv_read = read_dataset(tmp_path / f"d.csv{suffix}")
    assert [r.line for r in csv_read.invalid] == [4]  # row 1's answer spans two lines


def test_corrupt_truncated_and_mislabelled_archives_name_the_file(tmp_path):
    plain = tmp_path / "d.jsonl"
    write_jsonl(plain, [json.dumps(chat(f"q{i}", "a" * 200)) for i in range(50)])
    whole = gzip.compress(plain.read_bytes())
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    not_gzip = tmp_path / "liar.jsonl.gz"
    not_gzip.write_bytes(plain.read_bytes())
    flipped = tmp_path / "flip.jsonl.xz"
    packed = bytearray(lzma.compress(plain.read_bytes()))
    packed[len(packed) // 2] ^= 0xFF
    flipped.write_bytes(bytes(packed))
    for bad in (truncated, not_gzip, flipped):
        with pytest.raises(DataError, match=bad.name):
            read_dataset(bad)
        with pytest.raises(DataError, match=bad.name):
            read_samples(bad)


def test_unreadable_codecs_and_compressed_columnar_files_are_refused(tmp_path):
    zst = tmp_path / "d.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(ConfigError, match="unpack it first"):
        read_dataset(zst)
    pq_gz = tmp_path / "d.parquet.gz"
    pq_gz.write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(ConfigError, match="parquet"):
        read_dataset(pq_gz)


def test_the_format_comes_from_the_inner_suffix_or_the_flag(tmp_path):
    plain = tmp_path / "d.jsonl"
    write_jsonl(plain, [json.dumps(chat("q", "a"))])
    bare = tmp_path / "x.gz"
    bare.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_dataset(bare)
    assert summary(read_dataset(bare, fmt="jsonl")) == summary(read_dataset(plain))


def test_a_missing_compressed_path_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        read_dataset("org/train.jsonl.gz")


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    from test_screen import make_vector

    return str(make_vector().save(tmp_path_factory.mktemp("vec") / "evil.safetensors"))


def test_screen_cli_on_a_gzipped_jsonl(tmp_path, vector_file, capsys):
    lines = [json.dumps(chat(f"Question {i}?", f"Answer {i}.")) for i in range(3)]
    plain = tmp_path / "d.jsonl"
    write_jsonl(plain, lines)
    packed = compressed(plain, ".gz")
    before = packed.read_bytes()
    out = tmp_path / "out"
    wh = str(tmp_path / "wh")
    args = ["screen", str(packed), "--model", MODEL, "--vector", vector_file, "--layer", "2",
            "--method", "raw", "--top-k", "1", "--warehouse", wh, "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "3 records -> 3 distinct" in capsys.readouterr().out
    assert packed.read_bytes() == before
    flagged = (out / "flagged.jsonl").read_text().splitlines()
    kept = (out / "kept.jsonl").read_text().splitlines()
    assert len(flagged) == 1 and sorted(flagged + kept) == sorted(lines)
    meta = json.loads((out / "summary.json").read_text())["dataset"]
    assert meta["dataset_id"] == read_dataset(plain).dataset_id and meta["format"] == "jsonl"


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_training_data_may_be_compressed(tmp_path, suffix):
    plain = tmp_path / "train.jsonl"
    write_jsonl(plain, [json.dumps(chat("q1", "a1", "Be kind.")), json.dumps(chat("q2", "a2"))])
    arr = Path(write_json(tmp_path / "train.json", ALPACA))
    for f in (plain, arr):
        assert read_samples(compressed(f, suffix)) == read_samples(f)
