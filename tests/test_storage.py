import pytest

from headrot import storage


def test_join_refuses_escapes():
    assert storage.join("runs/a", "latents", "part-0.parquet") == "runs/a/latents/part-0.parquet"
    for bad in ["..", "../x", "a/../../b", ".hidden", "", "a b", "x\\y"]:
        with pytest.raises(ValueError, match="unsafe"):
            storage.join("runs/a", bad)


def test_local_roundtrip_and_markers(tmp_path):
    root = str(tmp_path / "run")
    stage = storage.join(root, "latents")
    assert storage.completion(stage) is None
    storage.write_bytes(storage.join(stage, "a.bin"), b"abc")
    assert storage.read_bytes(storage.join(stage, "a.bin")) == b"abc"
    storage.mark_complete(stage, {"rows": 3})
    assert storage.completion(stage) == {"rows": 3}
    # markers and temporaries are not data files
    assert storage.list_files(stage) == [str(tmp_path / "run" / "latents" / "a.bin")]


@pytest.mark.slow
def test_s3_roundtrip(s3_bucket):
    uri = storage.join(s3_bucket, "run", "x.json")
    storage.write_json(uri, {"a": 1})
    assert storage.read_json(uri) == {"a": 1}
    assert storage.list_files(storage.join(s3_bucket, "run")) == [uri]


def test_float_tensors_are_written_byte_stream_split_and_read_back_exactly(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from headrot import tables

    rng = np.random.default_rng(0)
    table = pa.table({
        "image_id": ["a.jpg", "b.jpg", "c.jpg"],
        "latent": tables.tensor_column(rng.normal(size=(3, 3, 8, 8)).astype(np.float32)),
        "half": tables.tensor_column(rng.normal(size=(3, 4)).astype(np.float16)),
        "counts": tables.tensor_column(np.arange(6, dtype=np.int64).reshape(3, 2)),
    })
    uri = str(tmp_path / "t.parquet")
    tables.write_parquet(uri, table)
    assert tables.read_parquet(uri).equals(table)
    meta = pq.ParquetFile(uri).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["latent.list.element"]
    assert "BYTE_STREAM_SPLIT" in encodings["half.list.element"]
    assert "BYTE_STREAM_SPLIT" not in encodings["counts.list.element"]     # integers keep the defaults
    assert "RLE_DICTIONARY" in encodings["image_id"]


@pytest.mark.parametrize("uri", ["s3://bucket/run", "s3a://bucket/run", "memory://bucket/run"])
def test_remote_filesystems_never_cache_listings(uri):
    """Every remote filesystem headrot builds, the pyarrow wrapper Ray Data reads through
    included, has the listings cache off (fsspec caches instances per option set, so one
    built without the option would be a second, caching instance: issue 13)."""
    fs, _ = storage.filesystem(uri)
    assert fs.dircache.use_listings_cache is False
    wrapped, _ = storage.arrow_filesystem(uri)
    assert wrapped.handler.fs is fs
    fs.dircache["bucket/run"] = [{"name": "bucket/run/stale", "type": "file", "size": 1}]
    assert "bucket/run" not in fs.dircache              # nothing is ever kept
