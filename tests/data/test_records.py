"""Record readers: schemas, and bad input -> file:line + field, or a counted skip."""
import json

import pytest

from findap_jax.data.records import RecordError, SkipCounter, expand, read_records


def _write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines))
    return str(path)


def test_formats_and_line_ends(tmp_path):
    crlf = _write(tmp_path / "a.jsonl", [b'{"text": "one"}\r', b"", b'{"text": "two"}\r', b""])
    cr = tmp_path / "b.jsonl"
    cr.write_bytes(b'{"text": "three"}\r{"text": "four"}\r')
    (tmp_path / "c.json").write_text(json.dumps([{"text": "five"}]))
    (tmp_path / "d.txt").write_bytes(b"six\r\nseven")
    got = [r["text"] for _, r in read_records(str(tmp_path / "*"), "cpt")]
    assert got == ["one", "two", "three", "four", "five", "six\nseven"]
    locs = [w for w, _ in read_records(crlf, "cpt")]
    assert locs == [f"{crlf}:1", f"{crlf}:3"]


def test_surrogate_pairs_pass_and_byte_order_marks_go(tmp_path):
    pair = _write(tmp_path / "pair.jsonl", [b'{"text": "grin \\ud83d\\ude00"}'])
    assert [r["text"] for _, r in read_records(pair, "cpt")] == ["grin \U0001f600"]
    (tmp_path / "bom.txt").write_bytes("\ufeffRevenue rose.".encode())
    assert [r["text"] for _, r in read_records(str(tmp_path / "bom.txt"), "cpt")] == ["Revenue rose."]


def test_damaged_parquet_is_located_and_skippable(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(RecordError, match=r"bad\.parquet: unreadable parquet file"):
        list(read_records(str(bad), "cpt"))
    skipped = SkipCounter()
    assert list(read_records(str(bad), "cpt", on_error="skip", skipped=skipped)) == [] and skipped.total == 1


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"]}), tmp_path / "x.parquet")
    recs = [r for _, r in read_records(str(tmp_path / "x.parquet"), "chat")]
    assert recs[1]["messages"] == [{"role": "user", "content": "p2"}, {"role": "assistant", "content": "r2"}]


BAD = [
    (b'{"txt": "x"}', "cpt", r"bad\.jsonl:2: field 'text': missing"),
    (b'{"text": "   "}', "cpt", r"bad\.jsonl:2: field 'text': empty"),
    (b'{"text": 5}', "cpt", r"bad\.jsonl:2: field 'text': expected a string, got int"),
    (b'{"text": "caf\xe9"}', "cpt", r"bad\.jsonl:2: undecodable bytes"),
    (b'{"text": "x"', "cpt", r"bad\.jsonl:2: invalid JSON"),
    (b'[1, 2]', "cpt", r"bad\.jsonl:2: expected a JSON object"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', "chat",
     r"bad\.jsonl:2: field 'messages'\[0\]\.role: unknown role 'robot'"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "chat", r"bad\.jsonl:2: .*no assistant turn"),
    (b'{"prompt": "q", "chosen": "a"}', "preference", r"bad\.jsonl:2: field 'rejected': missing"),
    (b'{"question": "q", "answer": "A", "answer_choices": []}', "cfa",
     r"bad\.jsonl:2: field 'answer_choices'"),
    (b'{"text": "bad \\ud800 half"}', "cpt", r"bad\.jsonl:2: field 'text': a lone surrogate"),
    (b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\udfff"}]}', "chat",
     r"bad\.jsonl:2: field 'messages\[1\]\.content': a lone surrogate"),
]
GOOD = {"cpt": b'{"text": "fine"}', "chat": b'{"prompt": "q", "response": "a"}',
        "preference": b'{"prompt": "q", "chosen": "a", "rejected": "b"}',
        "cfa": b'{"question": "q", "answer": "A", "answer_choices": ["x", "y"]}'}


@pytest.mark.parametrize("line,kind,pattern", BAD)
def test_bad_record_raises_with_location_or_is_counted(tmp_path, line, kind, pattern):
    path = _write(tmp_path / "bad.jsonl", [GOOD[kind], line, GOOD[kind]])
    with pytest.raises(RecordError, match=pattern):
        list(read_records(path, kind))
    skipped = SkipCounter()
    assert len(list(read_records(path, kind, on_error="skip", skipped=skipped))) == 2
    assert skipped.total == 1 and f"{path}:2" in skipped.examples[0]


def test_missing_files_are_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files match"):
        list(read_records(str(tmp_path / "*.jsonl"), "cpt"))
    (tmp_path / "sub.jsonl").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no files match \(only directories\)"):
        expand(str(tmp_path / "*.jsonl"))


def test_file_names_with_glob_characters_and_overlapping_patterns(tmp_path):
    odd = tmp_path / "train[1].jsonl"
    odd.write_text('{"text": "a"}\n')
    (tmp_path / "x.jsonl").write_text('{"text": "b"}\n')
    assert expand(str(odd)) == [str(odd)]
    assert expand([str(tmp_path / "*.jsonl"), str(tmp_path / "x.jsonl")]) == [str(odd), str(tmp_path / "x.jsonl")]
    assert [r["text"] for _, r in read_records([str(tmp_path / "*"), str(odd)], "cpt")] == ["a", "b"]


def test_tfds_source(tmp_path):
    import tensorflow_datasets as tfds

    msgs = {"role": tfds.features.Text(), "content": tfds.features.Text()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="findap_chat_test", version="1.0.0", data_dir=str(tmp_path),
        features=tfds.features.FeaturesDict({"messages": tfds.features.Sequence(msgs)}),
        split_datasets={"train": [("k0", {"messages": {"role": ["user", "assistant"], "content": ["q", "a"]}})]})
    recs = list(read_records(f"tfds:findap_chat_test:1.0.0@{tmp_path}", "chat"))
    assert recs[0][1]["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert recs[0][0].startswith("tfds:findap_chat_test")
    with pytest.raises(RecordError, match="cannot read TFDS dataset 'findap_missing'"):
        list(read_records(f"tfds:findap_missing@{tmp_path}", "chat"))
    import numpy as np
    tfds.dataset_builders.store_as_tfds_dataset(
        name="findap_bytes_test", version="1.0.0", data_dir=str(tmp_path),
        features=tfds.features.FeaturesDict({"text": tfds.features.Tensor(shape=(), dtype=np.object_)}),
        split_datasets={"train": [("k0", {"text": b"ok"}), ("k1", {"text": b"caf\xe9"})]})
    spec = f"tfds:findap_bytes_test:1.0.0@{tmp_path}"
    with pytest.raises(RecordError, match=r"\[train\]\[1\]: field 'text': undecodable bytes \(not UTF-8\) at byte 3"):
        list(read_records(spec, "cpt"))
    assert [r["text"] for _, r in read_records(spec, "cpt", on_error="skip", skipped=SkipCounter())] == ["ok"]
