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
